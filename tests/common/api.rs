//! The HTTP API from the tests' side: a `ureq` client that returns error statuses as
//! responses, and calls with or without the admin secret.

use std::time::Duration;

use serde_json::{json, Value};

use super::{Server, ADMIN};

/// An HTTP client that returns error statuses as responses.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// (status, body) of a request; `admin` adds the admin secret header.
pub fn call(
    srv: &Server,
    method: &str,
    path: &str,
    body: Option<Value>,
    admin: Option<&str>,
) -> (u16, Value) {
    let url = format!("http://127.0.0.1:{}{path}", srv.http_port);
    let a = agent();
    let mut resp = match method {
        "GET" | "DELETE" => {
            let mut r = if method == "GET" {
                a.get(&url)
            } else {
                a.delete(&url)
            };
            if let Some(s) = admin {
                r = r.header("token", s);
            }
            r.call()
        }
        _ => {
            let mut r = a.post(&url);
            if let Some(s) = admin {
                r = r.header("token", s);
            }
            r.send_json(body.unwrap_or(json!({})))
        }
    }
    .expect("http request");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().expect("body");
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

pub fn admin(srv: &Server, method: &str, path: &str, body: Option<Value>) -> Value {
    let (status, v) = call(srv, method, path, body, Some(ADMIN));
    assert_eq!(status, 200, "{method} {path}: {v}");
    assert_eq!(v["errCode"], 0, "{v}");
    v["data"].clone()
}
