//! The group-store contract against the embedded (redb) backend, on real files.

use im_storage::EmbeddedGroups;

fn open() -> (tempfile::TempDir, EmbeddedGroups) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedGroups::open(&dir.path().join("groups.redb")).expect("open");
    (dir, store)
}

im_testkit::group_store_contract!(open);

#[test]
fn survives_reopen() {
    use im_storage::GroupStore;
    use im_testkit::groups::wait;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("groups.redb");
    {
        let s = EmbeddedGroups::open(&path).unwrap();
        wait(s.add(3, vec![1, 2])).unwrap();
    }
    let s = EmbeddedGroups::open(&path).unwrap();
    assert_eq!(wait(s.members(3)).unwrap(), [1, 2]);
}
