//! Session logic driven directly: events in, actions checked, no sockets, no runtime, no
//! clock (time is an argument).

use std::sync::Arc;

use bytes::Bytes;
use im_protocol::packet::{cmd, connack};
use im_protocol::{ClientPacket, ServerPacket};
use im_storage::StoredMessage;

use super::*;
use crate::config::{DuplicateLogin, Persist};

struct Harness {
    e: Engine,
    now: Time,
}

fn harness(tune: impl FnOnce(&mut CoreConfig)) -> Harness {
    let mut cfg = CoreConfig::default();
    cfg.runtime.shards = 1;
    tune(&mut cfg);
    Harness {
        e: Engine::new(0, 1, Arc::new(cfg), Arc::new(ShardStats::default())),
        now: Time(1_000_000),
    }
}

fn push_frame(from: u32, n: u8) -> Bytes {
    let id = [n; 32];
    Bytes::from(
        ServerPacket::Push {
            msg_id: &id,
            payload: &[from as u8],
        }
        .to_vec(),
    )
}

/// The server packets written to `conn`, decoded to their command bytes.
fn written(actions: &[Action], conn: ConnId) -> Vec<u8> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Write { conn: c, out } if *c == conn => match out {
                Out::Close => Some(0),
                o => o.packet().and_then(|p| p.first().copied()),
            },
            _ => None,
        })
        .collect()
}

impl Harness {
    fn on(&mut self, ev: Event<'_>) -> Vec<Action> {
        let mut out = Vec::new();
        self.e.handle(self.now, ev, &mut out);
        self.e.check().expect("engine bookkeeping");
        out
    }

    fn later(&mut self, ms: u64) -> Vec<Action> {
        self.now = self.now.plus_ms(ms);
        self.on(Event::Tick)
    }

    /// Opens a session and answers its drain with an empty backlog.
    fn open(&mut self, conn: ConnId, uid: u32) -> Vec<Action> {
        let mut a = self.on(Event::Open {
            conn,
            uid,
            role: 1,
            ext: true,
            kind: TransportKind::Tcp,
        });
        let fetch = a.iter().find_map(|x| match x {
            Action::Fetch { token, .. } => Some(*token),
            _ => None,
        });
        if let Some(token) = fetch {
            a.extend(self.on(Event::Fetched {
                token,
                result: Ok(Vec::new()),
            }));
        }
        a
    }

    fn send(&mut self, conn: ConnId, p: ClientPacket<'_>) -> Vec<Action> {
        let bytes = p.to_vec();
        let mut a = self.on(Event::Packet {
            conn,
            bytes: &bytes,
        });
        a.extend(self.on(Event::ReadDone { conn, stop: None }));
        a
    }

    fn deliver(&mut self, to: u32, frame: &Bytes, seq: Option<u64>) -> Vec<Action> {
        self.on(Event::Deliver(Delivery {
            to,
            accepted: self.now,
            frame: frame.clone(),
            seq,
            hops: 0,
        }))
    }
}

#[test]
fn an_acked_push_removes_its_stored_copy() {
    let mut h = harness(|_| {});
    h.open(1, 10);
    let f = push_frame(2, 1);
    let a = h.deliver(10, &f, Some(7));
    assert_eq!(written(&a, 1), vec![cmd::PUBLISH]);
    let a = h.send(1, ClientPacket::PubAck { msg_id: &[1; 32] });
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::Remove { uid: 10, seqs } if seqs == &[7])),
        "{a:?}"
    );
}

#[test]
fn redelivery_every_interval_then_the_session_closes_and_the_push_is_stored() {
    let mut h = harness(|c| c.delivery.persist = Persist::OnFailure);
    h.open(1, 10);
    let f = push_frame(2, 1);
    h.deliver(10, &f, None);
    assert!(written(&h.later(1_999), 1).is_empty(), "not before 2 s");
    for _ in 0..3 {
        assert_eq!(written(&h.later(2_000), 1), vec![cmd::PUBLISH], "resent");
    }
    let a = h.later(2_000);
    assert_eq!(written(&a, 1), vec![cmd::DISCONNECT, 0]);
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::Store { msgs } if msgs[0].1 == f)));
    assert!(!h.e.is_open(1));
}

#[test]
fn a_client_that_stops_reading_is_closed_and_keeps_its_messages() {
    let mut h = harness(|c| {
        c.delivery.persist = Persist::OnFailure;
        c.session.send_queue = 4;
    });
    h.open(1, 10);
    let mut stored = 0;
    for n in 0..4 {
        let a = h.deliver(10, &push_frame(2, n), None);
        stored += a
            .iter()
            .filter(|x| matches!(x, Action::Store { .. }))
            .count();
    }
    // CONNECT_ACK + 4 pushes never written: past the queue of 4.
    assert!(!h.e.is_open(1));
    assert_eq!(stored, 4, "every unacked push goes to storage");
    h.on(Event::Written { conn: 1, n: 5 });
}

#[test]
fn the_drain_pages_and_waits_for_acks_before_the_next_page() {
    let mut h = harness(|c| c.delivery.offline_page = 4);
    let a = h.on(Event::Open {
        conn: 1,
        uid: 10,
        role: 1,
        ext: false,
        kind: TransportKind::Tcp,
    });
    let Some(Action::Fetch {
        token,
        after: 0,
        limit: 4,
        ..
    }) = a.iter().find(|x| matches!(x, Action::Fetch { .. }))
    else {
        panic!("no fetch: {a:?}")
    };
    // A live message during the drain is held until the backlog is out.
    let live = push_frame(3, 9);
    assert!(written(&h.deliver(10, &live, None), 1).is_empty());
    let page: Vec<StoredMessage> = (1..=4)
        .map(|n| StoredMessage {
            seq: n,
            frame: push_frame(2, n as u8),
        })
        .collect();
    let a = h.on(Event::Fetched {
        token: *token,
        result: Ok(page),
    });
    assert_eq!(written(&a, 1).len(), 4);
    assert!(!a.iter().any(|x| matches!(x, Action::Fetch { .. })));
    h.send(1, ClientPacket::PubAck { msg_id: &[1; 32] });
    let a = h.send(1, ClientPacket::PubAck { msg_id: &[2; 32] });
    let Some(Action::Fetch {
        token, after: 2.., ..
    }) = a.iter().find(|x| matches!(x, Action::Fetch { .. }))
    else {
        panic!("half the page acked: next fetch expected, got {a:?}")
    };
    let a = h.on(Event::Fetched {
        token: *token,
        result: Ok(Vec::new()),
    });
    assert_eq!(
        written(&a, 1),
        vec![cmd::PUBLISH],
        "the held message comes last"
    );
}

#[test]
fn a_retransmitted_publish_is_delivered_once_and_acked_after_the_first_copy() {
    let mut h = harness(|c| c.delivery.persist = Persist::BeforeAck);
    h.open(1, 10);
    h.open(2, 20);
    let id = [5u8; 32];
    let publish = ClientPacket::Publish {
        to: 20,
        msg_id: &id,
        payload: b"x",
    };
    let a = h.send(1, publish.clone());
    let Some(Action::Append { token, .. }) = a.iter().find(|x| matches!(x, Action::Append { .. }))
    else {
        panic!("{a:?}")
    };
    let token = *token;
    // Still being stored: a retransmission gets no answer yet (none is known).
    h.on(Event::Packet {
        conn: 1,
        bytes: &publish.to_vec(),
    });
    let a = h.on(Event::ReadDone {
        conn: 1,
        stop: None,
    });
    assert!(written(&a, 1).is_empty() && a.is_empty(), "{a:?}");
    let a = h.on(Event::Appended {
        token,
        result: Ok(vec![1]),
    });
    assert_eq!(written(&a, 1), vec![cmd::PUB_ACK]);
    assert_eq!(written(&a, 2), vec![cmd::PUBLISH]);
    let a = h.send(1, publish);
    assert_eq!(written(&a, 1), vec![cmd::PUB_ACK], "acked again");
    assert!(written(&a, 2).is_empty(), "not delivered again");
}

#[test]
fn duplicate_logins_follow_the_policy() {
    let mut h = harness(|c| c.session.duplicate_login = DuplicateLogin::KickOld);
    h.open(1, 10);
    let a = h.open(2, 10);
    assert_eq!(written(&a, 1), vec![cmd::LOGOUT, 0]);
    assert!(h.e.is_open(2) && !h.e.is_open(1));

    let mut h = harness(|c| c.session.duplicate_login = DuplicateLogin::Reject);
    h.open(1, 10);
    let a = h.open(2, 10);
    assert_eq!(written(&a, 2), vec![cmd::CONNECT_ACK, 0]);
    assert!(a.iter().any(|x| matches!(x, Action::Write { conn: 2, out }
        if out.packet() == Some(&[cmd::CONNECT_ACK, connack::DUPLICATE][..]))));
    assert!(h.e.is_open(1) && !h.e.is_open(2));

    let mut h = harness(|c| {
        c.session.duplicate_login = DuplicateLogin::Multi;
        c.session.max_devices = 2;
    });
    h.open(1, 10);
    h.open(2, 10);
    let a = h.open(3, 10);
    assert_eq!(written(&a, 1), vec![cmd::LOGOUT, 0], "the oldest goes");
    assert_eq!(h.e.sessions_info(10).len(), 2);
    let a = h.deliver(10, &push_frame(2, 1), None);
    assert_eq!((written(&a, 2).len(), written(&a, 3).len()), (1, 1));
}

#[test]
fn invalid_input_closes_after_the_reads_publishes_are_committed() {
    let mut h = harness(|c| c.delivery.persist = Persist::OnFailure);
    h.open(1, 10);
    let publish = ClientPacket::Publish {
        to: 20,
        msg_id: &[1; 32],
        payload: b"x",
    }
    .to_vec();
    h.on(Event::Packet {
        conn: 1,
        bytes: &publish,
    });
    h.on(Event::Packet {
        conn: 1,
        bytes: &[0xEE],
    });
    let a = h.on(Event::ReadDone {
        conn: 1,
        stop: None,
    });
    assert_eq!(
        written(&a, 1),
        vec![cmd::PUB_ACK, cmd::INVALID_PACKET, 0],
        "acked, then INVALID_PACKET and close"
    );
    assert!(
        a.iter().any(|x| matches!(x, Action::Store { .. })),
        "user 20 is offline"
    );
}

/// A live set of `n1` (this node) and `n2`, a user homed here and one homed on `n2`.
fn two_nodes() -> (Arc<crate::route::nodes::NodeMap>, u32, u32) {
    use crate::route::nodes::{Node, NodeMap};
    let addr = "127.0.0.1:1".parse().expect("address");
    let map =
        NodeMap::new("n1", vec![Node::new("n1", addr), Node::new("n2", addr)]).expect("n1 is live");
    let here = (1..)
        .find(|u| map.remote_home(*u).is_none())
        .expect("a uid");
    let there = (1..)
        .find(|u| map.remote_home(*u).is_some())
        .expect("a uid");
    (Arc::new(map), here, there)
}

#[test]
fn a_new_live_set_forwards_and_closes_the_sessions_whose_home_moved() {
    let (map, here, there) = two_nodes();
    let mut h = harness(|c| c.delivery.persist = Persist::OnFailure);
    h.open(1, here);
    h.open(2, there);
    h.deliver(there, &push_frame(9, 1), None);
    let a = h.on(Event::Nodes(map));
    assert_eq!(written(&a, 2), vec![cmd::DISCONNECT, 0], "its home moved");
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::Store { msgs } if msgs[0].0 == there)),
        "the unacked push is stored: {a:?}"
    );
    assert!(h.e.is_open(1) && !h.e.is_open(2));
    let a = h.deliver(there, &push_frame(9, 2), None);
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::Forward { node, .. } if &**node == "n2")),
        "{a:?}"
    );
    let a = h.deliver(here, &push_frame(9, 3), None);
    assert_eq!(written(&a, 1), vec![cmd::PUBLISH], "still delivered here");
}

#[test]
fn a_node_counted_dead_closes_every_session_and_keeps_their_pushes() {
    let (map, here, _) = two_nodes();
    let mut h = harness(|c| {
        c.delivery.persist = Persist::OnFailure;
        c.session.duplicate_login = DuplicateLogin::Multi;
        c.session.max_devices = 2;
    });
    h.on(Event::Nodes(map));
    h.open(1, here);
    h.open(2, here);
    let f = push_frame(9, 1);
    h.deliver(here, &f, None);
    let a = h.on(Event::Evicted);
    assert_eq!(written(&a, 1), vec![cmd::DISCONNECT, 0]);
    assert_eq!(written(&a, 2), vec![cmd::DISCONNECT, 0]);
    assert_eq!(
        a.iter()
            .filter(|x| matches!(x, Action::Store { msgs } if msgs.iter().all(|m| m.1 == f)))
            .count(),
        1,
        "the user's unacked push is stored once for its two devices: {a:?}"
    );
    assert!(!h.e.is_open(1) && !h.e.is_open(2));
    let (c1, c2) = (h.open(3, here), h.open(4, here));
    assert!(h.e.is_open(3) && h.e.is_open(4), "{c1:?} {c2:?}");
}
