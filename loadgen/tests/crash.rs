//! Crashes and shutdowns in the middle of a load run. loadgen's `offline` scenario stores
//! messages for offline users; the server is stopped (`kill -9` or SIGTERM) while loadgen is
//! publishing, started again on the same data directory, and the receivers (retrying their
//! logins meanwhile) drain what is stored. loadgen counts every PUB_ACK it got before the
//! stop and checks each of those messages arrives.
//!
//! - `kill -9`, `persist = before_ack`: a PUB_ACK means stored, so nothing acked may be lost.
//! - `kill -9`, `persist = on_failure`: acked messages still in the store's write queue at
//!   the kill are lost. The test measures that window and prints it; the README quotes it.
//! - SIGTERM, either mode: the graceful shutdown writes everything it accepted; nothing lost.

mod common;

use std::time::Duration;

use common::{loadgen_cmd, report, Server};

#[derive(Clone, Copy)]
enum Stop {
    Kill9,
    Sigterm,
}

/// Runs the stop-and-restart cycle; returns loadgen's report.
fn stop_during_offline_run(persist: &str, stop: Stop) -> serde_json::Value {
    let mut srv = Server::start(&[("IMSERVER_DELIVERY__PERSIST", persist)]);
    let child = loadgen_cmd("20s")
        .args(["--login-retry", "30s", "--port", &srv.tcp.to_string()])
        .args([
            "offline",
            "--receivers",
            "50",
            "--messages",
            "4000",
            "--senders",
            "4",
        ])
        .args(["--window", "16"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start loadgen");
    // Stop once a tenth of the messages were accepted: mid-run whatever the machine's
    // speed (a fixed delay let a fast run finish before the stop).
    let t = std::time::Instant::now();
    while srv.accepted() < 50 * 4000 / 10 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the senders never got going"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    match stop {
        Stop::Kill9 => srv.kill9(),
        Stop::Sigterm => srv.terminate(),
    }
    std::thread::sleep(Duration::from_millis(300));
    srv.spawn();
    let out = child.wait_with_output().expect("loadgen finished");
    let r = report(&out);
    let acked = r["acked"].as_u64().unwrap_or(0);
    assert!(acked > 0, "nothing was acked before the kill: {r}");
    assert!(
        acked < 50 * 4000,
        "the stop came after every message was acked; the test proves nothing: {r}"
    );
    assert!(
        r["errors"]["closed_by_target"].as_u64().unwrap_or(0) > 0,
        "the senders saw the stop: {r}"
    );
    r
}

#[test]
fn before_ack_loses_no_acked_message_to_kill_9() {
    let r = stop_during_offline_run("before_ack", Stop::Kill9);
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["duplicated"], 0, "{r}");
    assert_eq!(r["reordered"], 0, "{r}");
    assert!(r["delivered"].as_u64() >= r["acked"].as_u64(), "{r}");
}

#[test]
fn on_failure_loss_window_at_kill_9_is_measured() {
    let r = stop_during_offline_run("on_failure", Stop::Kill9);
    let (acked, lost) = (
        r["acked"].as_u64().unwrap_or(0),
        r["lost"].as_u64().unwrap_or(0),
    );
    eprintln!(
        "on_failure, kill -9 while publishing to offline users: {lost} of {acked} acked messages lost ({:.3}%)",
        100.0 * lost as f64 / acked as f64
    );
    assert_eq!(r["duplicated"], 0, "{r}");
    assert!(lost < acked, "the store wrote most of them: {r}");
}

#[test]
fn sigterm_under_load_loses_nothing_in_either_mode() {
    for persist in ["before_ack", "on_failure"] {
        let r = stop_during_offline_run(persist, Stop::Sigterm);
        for k in ["lost", "duplicated", "reordered", "unexpected"] {
            assert_eq!(r[k], 0, "{persist}: {k} in {r}");
        }
        eprintln!(
            "SIGTERM under load, {persist}: {} acked, {} delivered, 0 lost",
            r["acked"], r["delivered"]
        );
    }
}
