//! The load generator against the real server (and the echo baseline) over real sockets:
//! every scenario and transport runs briefly and must report traffic and zero lost,
//! duplicated or reordered messages. The server binary comes from the same `cargo test`
//! run (the workspace's root package builds it for its own tests).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_loadgen"))
        .parent()
        .expect("bin dir")
        .to_path_buf()
}

fn wait_port(port: u16) {
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "port {port} never opened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Server {
    _p: Proc,
    _dir: tempfile::TempDir,
    tcp: u16,
    ws: u16,
    wss: u16,
    control: u16,
}

fn server() -> Server {
    let exe = bin_dir().join("imserver");
    assert!(
        exe.exists(),
        "{} not built: run the workspace tests (`cargo test`) or `cargo build -p imserver` first",
        exe.display()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let (cp, kp) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cp, cert.cert.pem()).expect("write cert");
    std::fs::write(&kp, cert.key_pair.serialize_pem()).expect("write key");
    let (tcp, ws, wss, tls_tcp, control) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let child = Command::new(exe)
        .args(["--tcp-port", &tcp.to_string(), "--ws-port", &ws.to_string()])
        .args([
            "--bind",
            "127.0.0.1",
            "--shards",
            "2",
            "--log-level",
            "warn",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("IMSERVER_CONTROL__PORT", control.to_string())
        .env("IMSERVER_TLS__ENABLED", "true")
        .env("IMSERVER_TLS__CERT_PATH", format!("\"{}\"", cp.display()))
        .env("IMSERVER_TLS__KEY_PATH", format!("\"{}\"", kp.display()))
        .env("IMSERVER_TLS__WSS_PORT", wss.to_string())
        .env("IMSERVER_TLS__TCP_PORT", tls_tcp.to_string())
        .stdout(Stdio::null())
        .spawn()
        .expect("start imserver");
    let p = Proc(child);
    for port in [tcp, ws, wss, control] {
        wait_port(port);
    }
    Server {
        _p: p,
        _dir: dir,
        tcp,
        ws,
        wss,
        control,
    }
}

/// Runs loadgen with `--json`; returns the report, asserting it exited 0.
fn loadgen(args: &[String]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "--json",
            "--quiet",
            "--threads",
            "2",
            "--duration",
            "1500ms",
        ])
        .args(["--drain-timeout", "10s"])
        .args(args)
        .output()
        .expect("run loadgen");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "loadgen {args:?} failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bad JSON ({e}): {stderr}"))
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn assert_clean(r: &serde_json::Value) {
    for k in ["lost", "duplicated", "reordered", "unexpected"] {
        assert_eq!(r[k], 0, "{k} in {r}");
    }
    assert!(r["delivered"].as_u64().unwrap_or(0) > 0, "no traffic: {r}");
    assert!(
        r["errors"].as_object().is_some_and(|e| e.is_empty()),
        "errors: {r}"
    );
}

#[test]
fn every_scenario_and_transport_against_the_server() {
    let srv = server();
    let admin = format!("http://127.0.0.1:{}", srv.control);
    let tcp = srv.tcp.to_string();

    let r = loadgen(&[s(&["--port", &tcp, "p2p", "--pairs", "8"])].concat());
    assert_clean(&r);
    assert_eq!(r["acked"], r["sent"], "every publish answered: {r}");
    assert_eq!(
        r["delivered"], r["acked"],
        "every acked message delivered once: {r}"
    );

    let ws = srv.ws.to_string();
    let r = loadgen(
        &[s(&[
            "--transport",
            "ws",
            "--port",
            &ws,
            "p2p",
            "--pairs",
            "4",
            "--rate",
            "200",
        ])]
        .concat(),
    );
    assert_clean(&r);
    let rate = r["throughput"].as_f64().unwrap_or(0.0);
    assert!(rate < 8.0 * 200.0 * 1.5, "--rate is honoured: {rate}/s");

    let wss = srv.wss.to_string();
    let r = loadgen(
        &[s(&[
            "--transport",
            "wss",
            "--port",
            &wss,
            "--insecure",
            "p2p",
            "--pairs",
            "4",
        ])]
        .concat(),
    );
    assert_clean(&r);

    let r = loadgen(
        &[s(&[
            "--port",
            &tcp,
            "--admin-url",
            &admin,
            "group",
            "--groups",
            "3",
            "--members",
            "6",
        ])]
        .concat(),
    );
    assert_clean(&r);
    // Each message reaches the 5 other members; the fan-out histogram has one entry per message.
    assert_eq!(
        r["delivered"].as_u64(),
        r["acked"].as_u64().map(|a| a * 5),
        "{r}"
    );
    assert_eq!(r["fanout_latency_us"]["count"], r["acked"], "{r}");

    let r = loadgen(
        &[s(&[
            "--port",
            &tcp,
            "offline",
            "--receivers",
            "10",
            "--messages",
            "30",
            "--senders",
            "2",
        ])]
        .concat(),
    );
    assert_clean(&r);
    assert_eq!(r["delivered"], 300, "{r}");

    let r = loadgen(&[s(&["--port", &tcp, "connect", "--concurrency", "4"])].concat());
    assert!(
        r["extra"]["connects_per_s"].as_f64().unwrap_or(0.0) > 0.0,
        "{r}"
    );
    assert!(r["errors"].as_object().is_some_and(|e| e.is_empty()), "{r}");

    let pid = srv._p.0.id().to_string();
    let r = loadgen(
        &[s(&[
            "--port",
            &tcp,
            "idle",
            "--conns",
            "200",
            "--server-pid",
            &pid,
        ])]
        .concat(),
    );
    assert_eq!(r["extra"]["alive_at_end"], 200.0, "{r}");
    assert!(
        r["extra"]["server_rss_after_mib"].as_f64().unwrap_or(0.0) > 0.0,
        "{r}"
    );
}

#[test]
fn a_wrong_secret_is_a_setup_failure_not_a_clean_run() {
    let srv = server();
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "--quiet",
            "--duration",
            "500ms",
            "--secret",
            "wrong",
            "--port",
        ])
        .arg(srv.tcp.to_string())
        .args(["p2p", "--pairs", "2"])
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
    let r = loadgen(
        &[s(&[
            "--target",
            "echo",
            "--port",
            &port.to_string(),
            "p2p",
            "--pairs",
            "4",
        ])]
        .concat(),
    );
    assert_clean(&r);
    assert_eq!(r["delivered"], r["sent"], "{r}");
    drop(p);
}
