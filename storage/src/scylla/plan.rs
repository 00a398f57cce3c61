//! Turning one batch of appends and removals into ScyllaDB statements, without I/O.
//!
//! Removals move a per-user *delivered cursor* instead of deleting rows one by one: acked
//! messages are nearly always the oldest ones, so the cursor jumps over them and later reads
//! start above it (a clustering-key slice, no tombstones to skip). Only a removal that is not
//! at the front of the queue (an ack that overtook an older unacked message) becomes a
//! single-row DELETE. Rows under the cursor expire with the table's TTL.

use std::collections::{BTreeSet, HashMap};

use crate::offline::Write;

/// What the planner needs to know about one user with removals in the batch.
#[derive(Debug, Clone, Default)]
pub struct Queue {
    /// The stored delivered cursor (0 when none).
    pub cursor: u64,
    /// The oldest stored sequence numbers above the cursor, ascending (at least as many as
    /// the batch removes for this user, plus one, when that many exist).
    pub front: Vec<u64>,
}

/// The statements one batch becomes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// `(write index, message index, seq)` of every row to insert.
    pub inserts: Vec<(usize, usize, u64)>,
    /// `(uid, seq)` rows to delete.
    pub deletes: Vec<(u32, u64)>,
    /// `(uid, cursor)` cursors to store (only ones that moved).
    pub cursors: Vec<(u32, u64)>,
}

/// Plans `writes`; `seqs[i]` are the sequence numbers assigned to write `i` (empty for
/// removals) and `queues` the stored state of every user that has a removal.
pub fn plan(writes: &[Write<'_>], seqs: &[Vec<u64>], queues: &HashMap<u32, Queue>) -> Plan {
    struct State {
        cursor: u64,
        moved: bool,
        pending: BTreeSet<u64>,
    }
    let mut states: HashMap<u32, State> = HashMap::new();
    let mut inserted: HashMap<(u32, u64), (usize, usize)> = HashMap::new();
    let mut out = Plan::default();
    for (i, w) in writes.iter().enumerate() {
        match w {
            Write::Append(msgs) => {
                for (j, m) in msgs.iter().enumerate() {
                    let Some(&seq) = seqs.get(i).and_then(|s| s.get(j)) else {
                        continue;
                    };
                    inserted.insert((m.uid, seq), (i, j));
                    if let Some(st) = states.get_mut(&m.uid) {
                        st.pending.insert(seq);
                    }
                }
            }
            Write::Remove { uid, seqs: gone } => {
                let st = states.entry(*uid).or_insert_with(|| {
                    let q = queues.get(uid).cloned().unwrap_or_default();
                    let mut pending: BTreeSet<u64> = q.front.into_iter().collect();
                    // Rows appended earlier in this batch are pending too.
                    pending.extend(
                        inserted
                            .keys()
                            .filter(|(u, s)| u == uid && *s > q.cursor)
                            .map(|(_, s)| *s),
                    );
                    State {
                        cursor: q.cursor,
                        moved: false,
                        pending,
                    }
                });
                let gone: BTreeSet<u64> = gone.iter().copied().collect();
                // Jump the cursor over the acked front of the queue.
                while let Some(&first) = st.pending.first() {
                    if !gone.contains(&first) {
                        break;
                    }
                    st.pending.pop_first();
                    st.cursor = first;
                    st.moved = true;
                }
                for &seq in gone.iter().filter(|s| **s > st.cursor) {
                    st.pending.remove(&seq);
                    if inserted.remove(&(*uid, seq)).is_none() {
                        out.deletes.push((*uid, seq));
                    }
                }
            }
        }
    }
    let mut inserts: Vec<(usize, usize, u64)> = inserted
        .into_iter()
        .filter(|((uid, seq), _)| states.get(uid).is_none_or(|st| *seq > st.cursor))
        .map(|((_, seq), (i, j))| (i, j, seq))
        .collect();
    inserts.sort_unstable();
    out.inserts = inserts;
    let mut cursors: Vec<(u32, u64)> = states
        .into_iter()
        .filter(|(_, st)| st.moved)
        .map(|(uid, st)| (uid, st.cursor))
        .collect();
    cursors.sort_unstable();
    out.cursors = cursors;
    out.deletes.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::offline::OfflineMessage;

    fn m(uid: u32) -> OfflineMessage {
        OfflineMessage {
            uid,
            frame: Bytes::new(),
            expires_at_ms: 1,
        }
    }

    fn queue(cursor: u64, front: &[u64]) -> Queue {
        Queue {
            cursor,
            front: front.to_vec(),
        }
    }

    #[test]
    fn acks_at_the_front_move_the_cursor_without_deletes() {
        let w = [Write::Remove {
            uid: 5,
            seqs: &[11, 10],
        }];
        let q = HashMap::from([(5, queue(3, &[10, 11, 12]))]);
        let p = plan(&w, &[vec![]], &q);
        assert_eq!(p.cursors, [(5, 11)]);
        assert!(p.deletes.is_empty() && p.inserts.is_empty());
    }

    #[test]
    fn an_ack_past_a_gap_deletes_one_row() {
        let w = [Write::Remove {
            uid: 5,
            seqs: &[10, 12],
        }];
        let q = HashMap::from([(5, queue(0, &[10, 11, 12]))]);
        let p = plan(&w, &[vec![]], &q);
        assert_eq!(p.cursors, [(5, 10)]);
        assert_eq!(p.deletes, [(5, 12)]);
    }

    #[test]
    fn acks_under_the_cursor_are_ignored() {
        let w = [Write::Remove {
            uid: 5,
            seqs: &[2, 3],
        }];
        let q = HashMap::from([(5, queue(3, &[7]))]);
        let p = plan(&w, &[vec![]], &q);
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn rows_of_the_same_batch_are_pending_and_never_both_inserted_and_deleted() {
        let a = [m(9), m(9)];
        let w = [
            Write::Append(&a),
            Write::Remove {
                uid: 9,
                seqs: &[21],
            },
        ];
        let q = HashMap::from([(9, queue(0, &[]))]);
        let p = plan(&w, &[vec![20, 21], vec![]], &q);
        assert_eq!(p.inserts, [(0, 0, 20)]);
        assert!(p.deletes.is_empty() && p.cursors.is_empty());
    }

    #[test]
    fn appends_after_a_removal_are_inserted() {
        let a = [m(9)];
        let b = [m(10), m(9)];
        let w = [
            Write::Append(&a),
            Write::Remove { uid: 9, seqs: &[1] },
            Write::Append(&b),
        ];
        let q = HashMap::from([(9, queue(0, &[1]))]);
        let p = plan(&w, &[vec![5], vec![], vec![6, 7]], &q);
        assert_eq!(p.cursors, [(9, 1)]);
        assert_eq!(p.inserts, [(0, 0, 5), (2, 0, 6), (2, 1, 7)]);
    }
}
