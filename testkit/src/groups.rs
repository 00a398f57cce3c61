//! The contract every [`GroupStore`] backend must pass.
//!
//! A backend's test file instantiates the suite with [`group_store_contract!`], giving a
//! function that opens a fresh, empty store (and a guard that keeps whatever it runs on
//! alive for the test).

use im_storage::GroupStore;

pub use im_storage::groups::wait;

fn members(s: &dyn GroupStore, gid: u32) -> Vec<u32> {
    wait(s.members(gid)).expect("members")
}

/// A group nobody created has no members and is not listed.
pub fn unknown_group_is_empty(s: &dyn GroupStore) {
    assert!(members(s, 42).is_empty());
    assert!(!wait(s.groups()).expect("groups").contains(&42));
}

/// Adding creates the group; members come back ascending and once each.
pub fn add_creates_sorted_unique(s: &dyn GroupStore) {
    assert_eq!(wait(s.add(7, vec![30, 10, 20, 10])).unwrap(), 3);
    assert_eq!(wait(s.add(7, vec![20, 40])).unwrap(), 1);
    assert_eq!(members(s, 7), [10, 20, 30, 40]);
    assert_eq!(wait(s.add(7, vec![])).unwrap(), 0);
}

/// Removing counts what was there; removing the last member removes the group.
pub fn remove_and_last_member(s: &dyn GroupStore) {
    wait(s.add(8, vec![1, 2, 3])).unwrap();
    assert_eq!(wait(s.remove(8, vec![2, 9])).unwrap(), 1);
    assert_eq!(members(s, 8), [1, 3]);
    assert_eq!(wait(s.remove(8, vec![1, 3])).unwrap(), 2);
    assert!(members(s, 8).is_empty());
    assert!(!wait(s.groups()).unwrap().contains(&8));
}

/// Delete reports whether the group existed.
pub fn delete_group(s: &dyn GroupStore) {
    wait(s.add(9, vec![5, 6])).unwrap();
    assert!(wait(s.delete(9)).unwrap());
    assert!(members(s, 9).is_empty());
    assert!(!wait(s.delete(9)).unwrap());
}

/// Neighbouring and extreme group ids keep their own members; listing is ascending.
pub fn groups_are_isolated_and_listed(s: &dyn GroupStore) {
    wait(s.add(u32::MAX, vec![1])).unwrap();
    wait(s.add(5, vec![u32::MAX, 2])).unwrap();
    wait(s.add(6, vec![3])).unwrap();
    assert_eq!(members(s, 5), [2, u32::MAX]);
    assert_eq!(members(s, 6), [3]);
    assert_eq!(members(s, u32::MAX), [1]);
    assert_eq!(wait(s.groups()).unwrap(), [5, 6, u32::MAX]);
}

/// Every change made through the store moves the group's version.
pub fn writes_bump_versions(s: &dyn GroupStore) {
    let v0 = s.versions().get(11);
    wait(s.add(11, vec![1])).unwrap();
    let v1 = s.versions().get(11);
    assert_ne!(v0, v1);
    wait(s.remove(11, vec![1])).unwrap();
    let v2 = s.versions().get(11);
    assert_ne!(v1, v2);
    wait(s.add(11, vec![1])).unwrap();
    wait(s.delete(11)).unwrap();
    assert_ne!(s.versions().get(11), v2);
}

/// A 10,000-member group round-trips.
pub fn large_group(s: &dyn GroupStore) {
    let uids: Vec<u32> = (1..=10_000).rev().collect();
    assert_eq!(wait(s.add(12, uids)).unwrap(), 10_000);
    let m = members(s, 12);
    assert_eq!(m.len(), 10_000);
    assert!(m.windows(2).all(|w| w[0] < w[1]));
}

/// Instantiates the group-store contract: `$open` is `fn() -> (Guard, S)` with
/// `S: GroupStore`; the guard lives until the case ends.
#[macro_export]
macro_rules! group_store_contract {
    ($open:expr) => {
        $crate::group_store_contract!(@cases $open;
            unknown_group_is_empty, add_creates_sorted_unique, remove_and_last_member,
            delete_group, groups_are_isolated_and_listed, writes_bump_versions, large_group);
    };
    (@cases $open:expr; $($case:ident),*) => {
        $(
            #[test]
            fn $case() {
                let (_guard, store) = $open();
                $crate::groups::$case(&store);
            }
        )*
    };
}
