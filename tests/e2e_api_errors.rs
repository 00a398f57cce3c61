//! Errors of the HTTP API that no handler wrote (axum's own rejections) come in the OpenIM
//! shape, like the handlers' own.

mod common;

use std::time::Duration;

use common::api::call;
use common::{Server, ADMIN};
use serde_json::Value;

fn start() -> Server {
    Server::start(common::driver(), &[])
}

/// Sends `head` + `body` on a fresh connection (`Connection: close`) and reads the whole
/// reply: (status, headers, body parsed as JSON). The body is written from another thread
/// so a server that answers before reading all of it cannot deadlock the test.
fn raw_http(srv: &Server, head: String, body: Vec<u8>) -> (u16, String, Value) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", srv.http_port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(head.as_bytes());
        let _ = w.write_all(&body);
    });
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let _ = writer.join();
    let text = String::from_utf8_lossy(&reply).into_owned();
    let (headers, body) = text.split_once("\r\n\r\n").expect("a complete HTTP reply");
    let status = headers
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let json = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("body is not JSON ({e}): {headers}\n\n{body}"));
    (status, headers.to_ascii_lowercase(), json)
}

fn request(method: &str, path: &str, extra: &str, body_len: usize) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\ntoken: {ADMIN}\r\nconnection: close\r\n\
         content-length: {body_len}\r\n{extra}\r\n"
    )
}

/// Errors axum produces by itself (bad path parameters, wrong method, oversized or
/// non-JSON bodies, unknown paths) come in the OpenIM shape with a seed-004 code and the
/// right HTTP status, like the handlers' own errors.
fn errors_no_handler_wrote_have_the_openim_shape() {
    let srv = start();
    let shape = |status: u16, v: &Value, want_status: u16, want_code: u64, what: &str| {
        assert_eq!(status, want_status, "{what}: {v}");
        assert_eq!(v["errCode"], want_code, "{what}: {v}");
        assert!(
            v["errMsg"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {v}"
        );
        assert_eq!(v["errDlt"], "", "{what}: {v}");
        assert!(v.get("data").is_some(), "{what}: {v}");
    };
    for path in [
        "/users/-1/online",
        "/users/abc/online",
        "/users/4294967296/online",
        "/users/18446744073709551616/online",
        "/groups/abc",
        "/groups/4294967296",
        "/groups/-5",
    ] {
        let (status, v) = call(&srv, "GET", path, None, Some(ADMIN));
        shape(status, &v, 400, 1001, path);
    }
    // Wrong method: 405 with its `allow` header kept.
    let (status, headers, v) = raw_http(&srv, request("PUT", "/groups", "", 0), vec![]);
    shape(status, &v, 405, 1001, "PUT /groups");
    assert!(headers.contains("allow:"), "{headers}");
    assert!(
        headers.contains("content-type: application/json"),
        "{headers}"
    );
    // A body over the 2 MiB limit: 413, not 400.
    let big = vec![b' '; 3 << 20];
    let (status, _, v) = raw_http(
        &srv,
        request(
            "POST",
            "/groups",
            "content-type: application/json\r\n",
            big.len(),
        ),
        big,
    );
    shape(status, &v, 413, 1001, "oversized body");
    // Not JSON at all, and no content type.
    let (status, _, v) = raw_http(
        &srv,
        request("POST", "/groups", "content-type: application/json\r\n", 5),
        b"{nope".to_vec(),
    );
    shape(status, &v, 400, 1001, "malformed JSON");
    let (status, _, v) = raw_http(&srv, request("POST", "/groups", "", 2), b"{}".to_vec());
    shape(status, &v, 415, 1001, "no content type");
    // Unknown path and missing secret, as before.
    let (status, v) = call(&srv, "GET", "/nope", None, Some(ADMIN));
    shape(status, &v, 404, 1004, "/nope");
    let (status, v) = call(&srv, "GET", "/groups", None, None);
    shape(status, &v, 401, 1002, "no secret");
}

under_both_drivers!(errors_no_handler_wrote_have_the_openim_shape,);
