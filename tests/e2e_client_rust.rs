//! The Rust client library (`clients/rust`, crate `imclient`) against the real server,
//! under both I/O drivers: every transport, groups and refusals, reconnects across cut
//! connections (resent publishes, redelivered pushes handed over once, acks after a
//! reconnect), logout by a second login, bad credentials and heartbeats both ways.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::api::admin;
use common::sdk::{config, next, next_message, no_message_for, rt, Forwarder, SCHEMES};
use common::{Driver, Server};
use imclient::{AckMode, Client, Error, Event, Kind, SendError};
use serde_json::json;

const QUICK_REDELIVERY: (&str, &str) = ("IMSERVER_DELIVERY__REDELIVERY_INTERVAL_MS", "300");

fn every_transport(d: Driver) {
    let srv = Server::start_tls(d, &[QUICK_REDELIVERY]);
    rt().block_on(async {
        for (i, scheme) in SCHEMES.into_iter().enumerate() {
            let (a_uid, b_uid) = (10 + 2 * i as u32, 11 + 2 * i as u32);
            let (a, mut ae) = Client::connect(config(&srv, a_uid, scheme)).await.unwrap();
            let (b, mut be) = Client::connect(config(&srv, b_uid, scheme)).await.unwrap();
            assert!(matches!(
                next(&mut ae).await,
                Event::Connected { reconnect: false }
            ));
            let id = a
                .send(b_uid, format!("over {scheme}").as_bytes())
                .await
                .unwrap();
            let m = next_message(&mut be).await;
            assert_eq!(m.id, id, "{scheme}");
            assert_eq!(m.kind, Kind::Direct);
            assert_eq!(m.sender(), Some(a_uid), "the server asserts the sender");
            assert_eq!(m.text(), format!("over {scheme}"));
            // Acknowledged as it was taken: the server does not redeliver it.
            no_message_for(&mut be, Duration::from_millis(1000)).await;
            a.close().await;
            b.close().await;
            assert!(matches!(next(&mut ae).await, Event::Stopped(None)));
        }
    });
}

fn groups_and_refusals(d: Driver) {
    let srv = Server::start(d, &[QUICK_REDELIVERY]);
    admin(
        &srv,
        "POST",
        "/groups",
        Some(json!({"gid": 77, "members": [20, 21, 22]})),
    );
    rt().block_on(async {
        let (a, mut ae) = Client::connect(config(&srv, 20, "tcp")).await.unwrap();
        let (_b, mut be) = Client::connect(config(&srv, 21, "ws")).await.unwrap();
        let (_c, mut ce) = Client::connect(config(&srv, 22, "tcp")).await.unwrap();
        let (outsider, _oe) = Client::connect(config(&srv, 23, "tcp")).await.unwrap();

        let id = a.send_group(77, b"hello group").await.unwrap();
        for events in [&mut be, &mut ce] {
            let m = next_message(events).await;
            assert_eq!((m.id, m.kind.clone()), (id, Kind::Group { gid: 77 }));
            assert_eq!((m.sender(), m.text().as_str()), (Some(20), "hello group"));
        }
        let id = a.send_part(77, &[22], b"just 22").await.unwrap();
        let m = next_message(&mut ce).await;
        assert_eq!(m.id, id);
        assert_eq!(
            m.kind,
            Kind::Part {
                gid: 77,
                targets: vec![22]
            }
        );
        no_message_for(&mut be, Duration::from_millis(500)).await;
        no_message_for(&mut ae, Duration::from_millis(100)).await;

        // Refusals come back as PUB_ERR codes.
        let r = outsider.send_group(77, b"let me in").await;
        assert_eq!(r, Err(SendError::Refused(1203)), "not a member");
        assert_eq!(a.send(0, b"nobody").await, Err(SendError::Refused(1101)));
        assert_eq!(
            a.send_group(99, b"void").await,
            Err(SendError::Refused(1201))
        );
        assert!(matches!(
            a.send_part(77, &[], b"x").await,
            Err(SendError::Invalid(_))
        ));
        // The session is still fine after the refusals.
        a.send(21, b"still here").await.unwrap();
        assert_eq!(next_message(&mut be).await.text(), "still here");
    });
}

fn publishes_survive_cut_connections(d: Driver) {
    let srv = Server::start(d, &[QUICK_REDELIVERY]);
    rt().block_on(async {
        let target: SocketAddr = ([127, 0, 0, 1], srv.tcp_port).into();
        let fwd = Forwarder::start(target).await;
        let mut cfg = config(&srv, 30, "tcp");
        cfg.endpoint.port = fwd.port;
        let (a, mut ae) = Client::connect(cfg).await.unwrap();
        let (_b, mut be) = Client::connect(config(&srv, 31, "ws")).await.unwrap();

        // Three bursts of 100 sends, each cut off while its publishes are in flight: the
        // connection is cut as soon as the server answered one more send after the burst.
        let mut sends = Vec::new();
        let mut sent = HashSet::new();
        for burst in 0..3 {
            for i in 0..100 {
                let a = a.clone();
                let text = format!("m{burst}-{i}");
                sends.push(tokio::spawn(
                    async move { a.send(31, text.as_bytes()).await },
                ));
            }
            let text = format!("m{burst}-last");
            let last = a.send(31, text.as_bytes());
            let last = tokio::time::timeout(Duration::from_secs(20), last).await;
            sent.insert(last.expect("answered").expect("accepted"));
            fwd.cut();
        }
        for s in sends {
            let id = tokio::time::timeout(Duration::from_secs(20), s)
                .await
                .expect("every send answered")
                .expect("task")
                .expect("accepted");
            sent.insert(id);
        }
        assert_eq!(sent.len(), 303);
        let mut got = HashSet::new();
        while got.len() < sent.len() {
            let m = next_message(&mut be).await;
            assert!(got.insert(m.id), "handed over twice: {}", m.id_str());
            assert!(sent.contains(&m.id));
        }
        // Every message once: a publish resent after a cut is not delivered again.
        no_message_for(&mut be, Duration::from_millis(1000)).await;
        let mut saw = (false, false);
        while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(50), ae.recv()).await {
            match ev {
                Event::Disconnected { .. } => saw.0 = true,
                Event::Connected { reconnect: true } => saw.1 = true,
                _ => {}
            }
        }
        assert_eq!(saw, (true, true), "the sender saw the cut and reconnected");
    });
}

fn pushes_across_a_reconnect_are_handed_over_once(d: Driver) {
    let srv = Server::start(d, &[QUICK_REDELIVERY]);
    rt().block_on(async {
        let target: SocketAddr = ([127, 0, 0, 1], srv.tcp_port).into();
        let fwd = Forwarder::start(target).await;
        let (a, _ae) = Client::connect(config(&srv, 40, "tcp")).await.unwrap();
        let mut cfg = config(&srv, 41, "tcp");
        cfg.endpoint.port = fwd.port;
        cfg.ack_mode = AckMode::Manual;
        let (b, mut be) = Client::connect(cfg).await.unwrap();

        // Held unacknowledged across a cut: the server redelivers it to the new session,
        // the client does not hand it over again; the late ack goes to the new session.
        let first = a.send(41, b"first").await.unwrap();
        let m1 = next_message(&mut be).await;
        assert_eq!(m1.id, first);
        fwd.cut();
        loop {
            if let Event::Connected { reconnect: true } = next(&mut be).await {
                break;
            }
        }
        // Acked while the server may still be redelivering: the copy is acked again.
        let second = a.send(41, b"second").await.unwrap();
        let m2 = next_message(&mut be).await;
        assert_eq!(m2.id, second, "the first was not handed over twice");
        m1.ack();
        m2.ack();
        no_message_for(&mut be, Duration::from_millis(1500)).await;
        b.close().await;

        // Acknowledged for real: a fresh login finds nothing stored.
        let (_b2, mut be2) = Client::connect(config(&srv, 41, "ws")).await.unwrap();
        no_message_for(&mut be2, Duration::from_millis(800)).await;
    });
}

fn a_second_login_logs_the_first_out(d: Driver) {
    let srv = Server::start(d, &[]);
    rt().block_on(async {
        let (first, mut fe) = Client::connect(config(&srv, 50, "tcp")).await.unwrap();
        assert!(matches!(next(&mut fe).await, Event::Connected { .. }));
        let (_second, _se) = Client::connect(config(&srv, 50, "ws")).await.unwrap();
        assert!(matches!(next(&mut fe).await, Event::LoggedOut));
        assert!(
            fe.recv().await.is_none(),
            "stopped: no reconnect after a logout"
        );
        assert_eq!(first.send(51, b"x").await, Err(SendError::Stopped));
    });
}

fn refused_logins_are_errors(d: Driver) {
    let srv = Server::start(d, &[("IMSERVER_SESSION__DUPLICATE_LOGIN", "reject")]);
    rt().block_on(async {
        let mut cfg = config(&srv, 60, "tcp");
        cfg.token = "not-a-token".into();
        assert!(matches!(Client::connect(cfg).await, Err(Error::Refused(3))));
        let (_held, _e) = Client::connect(config(&srv, 60, "tcp")).await.unwrap();
        let again = Client::connect(config(&srv, 60, "ws")).await;
        assert!(matches!(again, Err(Error::Refused(1))), "reject policy");
        let mut cfg = config(&srv, 61, "tcp");
        cfg.endpoint.port = 1;
        assert!(matches!(Client::connect(cfg).await, Err(Error::Io(_))));
    });
}

fn heartbeats_both_ways_keep_sessions(d: Driver) {
    let srv = Server::start(
        d,
        &[
            ("IMSERVER_SESSION__HEARTBEAT_INTERVAL_MS", "200"),
            ("IMSERVER_SESSION__HEARTBEAT_TIMEOUT_MS", "300"),
        ],
    );
    rt().block_on(async {
        // Without extensions the server pings and the client answers; with them the client
        // also pings a quiet connection itself.
        let mut plain = config(&srv, 70, "tcp");
        plain.extensions = false;
        let mut pinging = config(&srv, 71, "ws");
        pinging.ping_interval = Duration::from_millis(150);
        let (a, mut ae) = Client::connect(plain).await.unwrap();
        let (b, mut be) = Client::connect(pinging).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2000)).await;
        for events in [&mut ae, &mut be] {
            assert!(matches!(
                next(events).await,
                Event::Connected { reconnect: false }
            ));
            no_message_for(events, Duration::from_millis(10)).await;
        }
        a.send(71, b"alive").await.unwrap();
        b.send(70, b"alive too").await.unwrap();
        assert_eq!(next(&mut be).await.message_text(), "alive");
        assert_eq!(next(&mut ae).await.message_text(), "alive too");
    });
}

trait MessageText {
    /// The text of a message event; panics on any other event (a reconnect would show
    /// here as `Disconnected`).
    fn message_text(self) -> String;
}

impl MessageText for Event {
    fn message_text(self) -> String {
        match self {
            Event::Message(m) => m.text(),
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

both_drivers!(
    every_transport,
    groups_and_refusals,
    publishes_survive_cut_connections,
    pushes_across_a_reconnect_are_handed_over_once,
    a_second_login_logs_the_first_out,
    refused_logins_are_errors,
    heartbeats_both_ways_keep_sessions,
);
