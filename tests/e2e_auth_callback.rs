//! `auth.mode = "http"` against a real local HTTP server (a thread on a loopback socket
//! speaking HTTP/1.1): pass (the uid comes from the reply), denied, timeout, HTTP 500, a
//! reply that is not JSON, and no server at all. Only "pass" lets a client in.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{connect_packet, content, msg_id, Client, Kind, Server};

/// A request as the callback server saw it.
#[derive(Debug, Clone)]
struct Seen {
    head: String,
    body: String,
}

/// Answers by password: `good` → pass as the username's uid, `alias` → pass as uid 8,
/// `deny` → denied, `slow` → answers after 2 s, `boom` → HTTP 500, `junk` → not JSON.
fn callback_server() -> (u16, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            let log = log.clone();
            std::thread::spawn(move || serve(conn, &log));
        }
    });
    (port, seen)
}

fn serve(mut conn: TcpStream, log: &Mutex<Vec<Seen>>) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut head = String::new();
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let mut body = vec![0u8; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    log.lock().unwrap().push(Seen {
        head,
        body: body.clone(),
    });
    let field = |k: &str| {
        body.split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap_or("")
            .to_string()
    };
    let (status, reply) = match field("password").as_str() {
        "good" => (
            "200 OK",
            format!(r#"{{"result":"pass","uid":{}}}"#, field("username")),
        ),
        "alias" => ("200 OK", r#"{"result":"pass","uid":8}"#.to_string()),
        "deny" => ("200 OK", r#"{"result":"denied"}"#.to_string()),
        "slow" => {
            std::thread::sleep(Duration::from_secs(2));
            ("200 OK", r#"{"result":"pass","uid":1}"#.to_string())
        }
        "boom" => ("500 Internal Server Error", "oops".to_string()),
        _ => ("200 OK", "<html>not json</html>".to_string()),
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    );
}

fn start(url: &str) -> Server {
    Server::start(
        common::driver(),
        &[
            ("IMSERVER_AUTH__MODE", "http"),
            ("IMSERVER_AUTH__HTTP_URL", url),
            ("IMSERVER_AUTH__HTTP_TIMEOUT_MS", "500"),
        ],
    )
}

/// CONNECT with `username`/`password`; returns the CONNECT_ACK code.
fn connack(srv: &Server, username: &str, password: &str) -> (u8, Client) {
    let mut c = Client::raw(srv, Kind::Tcp);
    c.send(&connect_packet(username, password, Some(1)));
    let p = c.recv_packet();
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!(p[0], 2, "CONNECT_ACK");
    (p[1], c)
}

fn pass_denied_timeout_500_and_garbage() {
    let (port, seen) = callback_server();
    let srv = start(&format!("http://127.0.0.1:{port}/auth"));

    // Pass: the session is the uid the callback named.
    let (code, mut seven) = connack(&srv, "7", "good");
    assert_eq!(code, 0);
    let (code, mut alias) = connack(&srv, "someone", "alias");
    assert_eq!(code, 0);
    seven.publish_acked(8, &msg_id(1), b"hello uid 8");
    assert_eq!(content(&alias.recv_push_ack().1), "hello uid 8");
    {
        let log = seen.lock().unwrap();
        let first = &log[0];
        assert_eq!(first.body, "username=7&password=good&role=1");
        assert!(
            first.head.starts_with("POST /auth HTTP/1.1"),
            "{}",
            first.head
        );
        let head = first.head.to_ascii_lowercase();
        assert!(head.contains("accept: application/json"), "{head}");
        assert!(
            head.contains("content-type: application/x-www-form-urlencoded;charset=utf-8"),
            "{head}"
        );
    }

    // Denied: CONNECT_ACK 3. Failures: CONNECT_ACK 4, never 0.
    assert_eq!(connack(&srv, "7", "deny").0, 3);
    let t = Instant::now();
    assert_eq!(connack(&srv, "7", "slow").0, 4);
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "timeout honoured: {:?}",
        t.elapsed()
    );
    assert_eq!(connack(&srv, "7", "boom").0, 4);
    assert_eq!(connack(&srv, "7", "junk").0, 4);
    // The refused ones are closed; the accepted ones still work.
    let (_, mut refused) = connack(&srv, "7", "deny");
    refused.expect_closed(Duration::from_secs(2));
    alias.publish_acked(7, &msg_id(2), b"still here");
    assert_eq!(content(&seven.recv_push_ack().1), "still here");
}

fn callback_server_down_answers_unavailable() {
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let srv = start(&format!("http://127.0.0.1:{port}/auth"));
    assert_eq!(connack(&srv, "7", "good").0, 4);
}

#[test]
fn bad_callback_url_fails_the_start_clearly() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_imserver"))
        .args(["--config", "/dev/null", "print-config"])
        .env("IMSERVER_AUTH__MODE", "http")
        .output()
        .unwrap();
    // print-config does not validate; running does.
    assert!(out.status.success());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_imserver"))
        .args(["--config", "/dev/null", "--tcp-port", "0", "--ws-port", "0"])
        .env("IMSERVER_AUTH__MODE", "http")
        .env("IMSERVER_AUTH__HTTP_URL", "https://example.invalid/auth")
        .env("IMSERVER_CONTROL__ENABLED", "false")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http_url"), "{err}");
}

under_both_drivers!(
    pass_denied_timeout_500_and_garbage,
    callback_server_down_answers_unavailable,
);
