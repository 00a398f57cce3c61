//! The command line and the start-up output as an operator sees them: the summary spells
//! settings the way the configuration file does, logs carry no colour codes when they go to
//! a file or journald, and each subcommand's `--help` lists only what it takes.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_imserver");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn help(args: &[&str]) -> String {
    let out = Command::new(EXE).args(args).output().expect("run imserver");
    assert!(out.status.success(), "{args:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn summary_uses_config_names_and_logs_have_no_colour_off_a_terminal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(EXE)
        .args([
            "--config",
            "/dev/null",
            "--bind",
            "127.0.0.1",
            "--shards",
            "1",
        ])
        .args(["--tcp-port", &free_port().to_string()])
        .args(["--ws-port", &free_port().to_string()])
        .arg("--data-dir")
        .arg(dir.path())
        .env("IMSERVER_CONTROL__PORT", free_port().to_string())
        .env("IMSERVER_SESSION__DUPLICATE_LOGIN", "kick_old")
        .env("IMSERVER_RUNTIME__PIN_CORES", "false")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn imserver");
    let mut summary = Vec::new();
    let start = Instant::now();
    for line in BufReader::new(child.stdout.take().expect("stdout")).lines() {
        let line = line.expect("summary line");
        let done = line == "ready";
        summary.push(line);
        if done || start.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    // SIGTERM, not SIGKILL: the graceful stop comes after the "imserver ready" log line
    // (written right after the summary), so the logs below are complete.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut logs = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut logs)
        .expect("logs");
    let _ = child.wait();
    let summary = summary.join("\n");
    assert!(summary.ends_with("ready"), "{summary}\n{logs}");
    for want in [
        "persist: on_failure",
        "envelope json",
        "duplicate login kick_old",
    ] {
        assert!(summary.contains(want), "missing {want:?} in\n{summary}");
    }
    for rust_name in ["OnFailure", "Json", "KickOld"] {
        assert!(!summary.contains(rust_name), "{rust_name} in\n{summary}");
    }
    assert!(logs.contains("imserver ready"), "{logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "ANSI escape in piped logs: {logs:?}"
    );
}

#[test]
fn each_command_documents_only_its_own_flags() {
    let server = help(&["--help"]);
    for flag in ["--tcp-port", "--ws-port", "--shards", "--data-dir"] {
        assert!(server.contains(flag), "{flag} in\n{server}");
    }
    // Every server flag has help text.
    for line in server.lines().filter(|l| l.trim_start().starts_with("--")) {
        let text = line.trim_start();
        let described = text
            .split_once("  ")
            .is_some_and(|(_, d)| !d.trim().is_empty());
        assert!(described, "no help text: {line}");
    }
    let run = help(&["run", "--help"]);
    assert!(run.contains("--tcp-port"), "{run}");
    for sub in [
        &["token", "--help"][..],
        &["group", "--help"],
        &["print-config", "--help"],
    ] {
        let text = help(sub);
        for flag in ["--tcp-port", "--ws-port", "--shards", "--persist"] {
            assert!(!text.contains(flag), "{sub:?} lists {flag}:\n{text}");
        }
        assert!(text.contains("--config"), "{sub:?}:\n{text}");
    }
    // Overrides before a subcommand and after `run` both apply.
    let cfg = String::from_utf8(
        Command::new(EXE)
            .args([
                "--config",
                "/dev/null",
                "--tcp-port",
                "1234",
                "print-config",
            ])
            .output()
            .expect("print-config")
            .stdout,
    )
    .expect("utf-8");
    assert!(cfg.contains("tcp_port = 1234"), "{cfg}");
}
