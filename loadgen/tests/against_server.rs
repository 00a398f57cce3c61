//! The load generator against the real server (and the echo baseline) over real sockets:
//! every scenario and transport runs briefly and must report traffic and zero lost,
//! duplicated or reordered messages. The server binary comes from the same `cargo test`
//! run (the workspace's root package builds it for its own tests).

mod common;

use std::process::{Command, Stdio};

use common::{assert_clean, free_port, loadgen, wait_port, Proc, Server};

#[test]
fn every_scenario_and_transport_against_the_server() {
    let srv = Server::start(&[]);
    let admin = srv.admin_url();
    let tcp = srv.tcp.to_string();

    let r = loadgen(&["--port", &tcp, "p2p", "--pairs", "8"]);
    assert_clean(&r);
    assert_eq!(r["acked"], r["sent"], "every publish answered: {r}");
    assert_eq!(
        r["delivered"], r["acked"],
        "every acked message delivered once: {r}"
    );

    let ws = srv.ws.to_string();
    let r = loadgen(&[
        "--transport",
        "ws",
        "--port",
        &ws,
        "p2p",
        "--pairs",
        "4",
        "--rate",
        "200",
    ]);
    assert_clean(&r);
    let rate = r["throughput"].as_f64().unwrap_or(0.0);
    assert!(rate < 8.0 * 200.0 * 1.5, "--rate is honoured: {rate}/s");

    let wss = srv.wss.to_string();
    let r = loadgen(&[
        "--transport",
        "wss",
        "--port",
        &wss,
        "--insecure",
        "p2p",
        "--pairs",
        "4",
    ]);
    assert_clean(&r);

    let r = loadgen(&[
        "--port",
        &tcp,
        "--admin-url",
        &admin,
        "group",
        "--groups",
        "3",
        "--members",
        "6",
    ]);
    assert_clean(&r);
    // Each message reaches the 5 other members; the fan-out histogram has one entry per message.
    assert_eq!(
        r["delivered"].as_u64(),
        r["acked"].as_u64().map(|a| a * 5),
        "{r}"
    );
    assert_eq!(r["fanout_latency_us"]["count"], r["acked"], "{r}");

    let r = loadgen(&[
        "--port",
        &tcp,
        "offline",
        "--receivers",
        "10",
        "--messages",
        "30",
        "--senders",
        "2",
    ]);
    assert_clean(&r);
    assert_eq!(r["delivered"], 300, "{r}");

    let r = loadgen(&["--port", &tcp, "connect", "--concurrency", "4"]);
    assert!(
        r["extra"]["connects_per_s"].as_f64().unwrap_or(0.0) > 0.0,
        "{r}"
    );
    assert!(r["errors"].as_object().is_some_and(|e| e.is_empty()), "{r}");

    let pid = srv.pid().to_string();
    let r = loadgen(&[
        "--port",
        &tcp,
        "idle",
        "--conns",
        "200",
        "--server-pid",
        &pid,
    ]);
    assert_eq!(r["extra"]["alive_at_end"], 200.0, "{r}");
    assert!(
        r["extra"]["server_rss_after_mib"].as_f64().unwrap_or(0.0) > 0.0,
        "{r}"
    );
}

#[test]
fn a_wrong_secret_is_a_setup_failure_not_a_clean_run() {
    let srv = Server::start(&[]);
    let out = common::loadgen_cmd("500ms")
        .args([
            "--secret",
            "wrong",
            "--port",
            &srv.tcp.to_string(),
            "p2p",
            "--pairs",
            "2",
        ])
        .output()
        .expect("run loadgen");
    assert!(!out.status.success(), "refused logins must fail the run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("logins failed") && err.contains("refused"),
        "{err}"
    );
}

#[test]
fn echo_baseline() {
    let port = free_port();
    let p = Proc(
        Command::new(env!("CARGO_BIN_EXE_echo-server"))
            .args([port.to_string(), "1".into()])
            .stderr(Stdio::null())
            .spawn()
            .expect("start echo-server"),
    );
    wait_port(port);
    let r = loadgen(&[
        "--target",
        "echo",
        "--port",
        &port.to_string(),
        "p2p",
        "--pairs",
        "4",
    ]);
    assert_clean(&r);
    assert_eq!(r["delivered"], r["sent"], "{r}");
    drop(p);
}
