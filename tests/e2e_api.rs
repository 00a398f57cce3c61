//! The HTTP API end to end: the real binary, a real HTTP client (`ureq`) and real protocol
//! clients: tokens, server-side sends, groups, who is online. Metrics: `e2e_metrics.rs`;
//! errors in the OpenIM shape: `e2e_api_errors.rs`.

mod common;

use std::time::Duration;

use common::api::{admin, agent, call};
use common::{content, msg_id, Client, Kind, Server, ADMIN};
use serde_json::{json, Value};

fn start() -> Server {
    Server::start(common::driver(), &[])
}

fn token_from_the_api_logs_in() {
    let srv = start();
    let (status, v) = call(
        &srv,
        "POST",
        "/auth/user_token",
        Some(json!({"secret": ADMIN, "platform": 1, "uid": 42})),
        None,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["errCode"].as_u64(), v["data"]["uid"].as_u64()),
        (Some(0), Some(42))
    );
    assert!(v["data"]["expiredTime"].as_u64().unwrap() > 1_700_000_000);
    let token = v["data"]["token"].as_str().unwrap().to_string();
    let _c = Client::login(&srv, 42, Kind::Tcp, &token);
    // OpenIM field names, uid as a string.
    let (_, v) = call(
        &srv,
        "POST",
        "/auth/user_token",
        Some(json!({"secret": ADMIN, "platformID": 2, "userID": "43"})),
        None,
    );
    let _c = Client::login(&srv, 43, Kind::Ws, v["data"]["token"].as_str().unwrap());
    // Wrong secret: 401, errCode 1002 (NoPermission); malformed body: 400, 1001.
    let (status, v) = call(
        &srv,
        "POST",
        "/auth/user_token",
        Some(json!({"secret": "nope", "uid": 42})),
        None,
    );
    assert_eq!((status, v["errCode"].as_u64()), (401, Some(1002)), "{v}");
    let (status, v) = call(
        &srv,
        "POST",
        "/auth/user_token",
        Some(json!({"secret": ADMIN})),
        None,
    );
    assert_eq!((status, v["errCode"].as_u64()), (400, Some(1001)), "{v}");
}

fn admin_endpoints_need_the_secret() {
    let srv = start();
    for (m, p) in [
        ("GET", "/groups"),
        ("GET", "/users/1/online"),
        ("POST", "/msg/send"),
        ("DELETE", "/groups/1"),
    ] {
        let (status, v) = call(&srv, m, p, None, None);
        assert_eq!(
            (status, v["errCode"].as_u64()),
            (401, Some(1002)),
            "{m} {p}: {v}"
        );
        assert!(
            v["errMsg"].as_str().unwrap().contains("admin secret"),
            "{v}"
        );
        let (status, _) = call(&srv, m, p, None, Some("wrong"));
        assert_eq!(status, 401, "{m} {p} with a wrong secret");
    }
    // Bearer works too; health is open.
    let url = format!("http://127.0.0.1:{}/groups", srv.http_port);
    let r = agent()
        .get(&url)
        .header("authorization", &format!("Bearer {ADMIN}"))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(call(&srv, "GET", "/healthz", None, None).0, 200);
    let (status, v) = call(&srv, "GET", "/readyz", None, None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["shards"], "ok");
    assert_eq!(call(&srv, "GET", "/nope", None, None).0, 404);
}

fn server_side_send_reaches_online_offline_and_groups() {
    let srv = start();
    let mut c5 = srv.connect(5, Kind::Tcp);
    let d = admin(
        &srv,
        "POST",
        "/msg/send",
        Some(json!({"recvID": 5, "content": "from the server"})),
    );
    assert_eq!(d["msgID"].as_str().unwrap().len(), 32);
    let (id, payload) = c5.recv_push_ack();
    assert_eq!(&id[..], d["msgID"].as_str().unwrap().as_bytes());
    let v: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(
        (v["from"].as_str(), v["content"].as_str()),
        (Some("0"), Some("from the server"))
    );
    // Offline: stored, delivered at login; sendID shows as the sender.
    admin(
        &srv,
        "POST",
        "/msg/send",
        Some(
            json!({"sendID": 9, "recvID": 6, "content": "later", "msgID": "0123456789abcdef0123456789abcdef"}),
        ),
    );
    let mut c6 = srv.connect(6, Kind::Ws);
    let (id, payload) = c6.recv_push_ack();
    assert_eq!(&id, b"0123456789abcdef0123456789abcdef");
    assert_eq!(content(&payload), "later");
    // A group made through the API, a group message through the API: every member gets it.
    admin(
        &srv,
        "POST",
        "/groups",
        Some(json!({"gid": 7, "members": [5, 6]})),
    );
    admin(
        &srv,
        "POST",
        "/msg/send",
        Some(json!({"groupID": 7, "content": "to the group"})),
    );
    for c in [&mut c5, &mut c6] {
        let g = c.recv_group_push(true);
        assert_eq!(
            (g.group, content(&g.payload)),
            (7, "to the group".to_string())
        );
    }
    // A retried request with the same msgID is accepted again but delivered once.
    let again =
        json!({"recvID": 5, "content": "once", "msgID": "ffffffffffffffffffffffffffffffff"});
    admin(&srv, "POST", "/msg/send", Some(again.clone()));
    admin(&srv, "POST", "/msg/send", Some(again));
    assert_eq!(content(&c5.recv_push_ack().1), "once");
    c5.expect_silence(Duration::from_millis(300));
    // Refusals map to codes.
    let (status, v) = call(
        &srv,
        "POST",
        "/msg/send",
        Some(json!({"groupID": 8, "content": "x"})),
        Some(ADMIN),
    );
    assert_eq!((status, v["errCode"].as_u64()), (404, Some(1201)), "{v}");
    let (status, v) = call(
        &srv,
        "POST",
        "/msg/send",
        Some(json!({"recvID": 5, "groupID": 7, "content": "x"})),
        Some(ADMIN),
    );
    assert_eq!((status, v["errCode"].as_u64()), (400, Some(1001)), "{v}");
    c5.expect_silence(Duration::from_millis(200));
}

fn group_endpoints_change_who_receives() {
    let srv = start();
    admin(
        &srv,
        "POST",
        "/groups",
        Some(json!({"groupID": 8, "memberUserIDs": [1, 2]})),
    );
    let (status, v) = call(
        &srv,
        "POST",
        "/groups",
        Some(json!({"gid": 8, "members": [3]})),
        Some(ADMIN),
    );
    assert_eq!((status, v["errCode"].as_u64()), (409, Some(1202)), "{v}");
    let mut c1 = srv.connect(1, Kind::Tcp);
    let mut c2 = srv.connect(2, Kind::Tcp);
    let mut c3 = srv.connect(3, Kind::Ws);
    c1.group_publish(8, &msg_id(1), b"one");
    c1.expect_group_ack(false, &msg_id(1));
    assert_eq!(content(&c2.recv_group_push(true).payload), "one");
    c3.expect_silence(Duration::from_millis(200));

    assert_eq!(
        admin(
            &srv,
            "POST",
            "/groups/8/members",
            Some(json!({"uids": [3]}))
        )["added"],
        1
    );
    assert_eq!(
        admin(
            &srv,
            "POST",
            "/groups/8/members/remove",
            Some(json!({"uids": [2]}))
        )["removed"],
        1
    );
    assert_eq!(
        admin(&srv, "GET", "/groups/8", None)["members"],
        json!([1, 3])
    );
    assert_eq!(
        admin(&srv, "GET", "/groups", None)["groups"],
        json!([{"gid": 8, "members": 2}])
    );
    c1.group_publish(8, &msg_id(2), b"two");
    c1.expect_group_ack(false, &msg_id(2));
    assert_eq!(content(&c3.recv_group_push(true).payload), "two");
    c2.expect_silence(Duration::from_millis(200));

    admin(&srv, "DELETE", "/groups/8", None);
    c1.group_publish(8, &msg_id(3), b"three");
    c1.expect_pub_err(&msg_id(3), 1201);
    let (status, v) = call(&srv, "GET", "/groups/8", None, Some(ADMIN));
    assert_eq!((status, v["errCode"].as_u64()), (404, Some(1201)));
}

fn online_lists_sessions_and_transports() {
    let srv = Server::start(
        common::driver(),
        &[("IMSERVER_SESSION__DUPLICATE_LOGIN", "multi")],
    );
    let d = admin(&srv, "GET", "/users/9/online", None);
    assert_eq!(
        (
            d["online"].as_bool(),
            d["sessions"].as_array().map(Vec::len)
        ),
        (Some(false), Some(0))
    );
    let _a = srv.connect(9, Kind::Ws);
    let _b = srv.connect(9, Kind::Tcp);
    let d = admin(&srv, "GET", "/users/9/online", None);
    assert_eq!(d["online"], true);
    let mut transports: Vec<&str> = d["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["transport"].as_str().unwrap())
        .collect();
    transports.sort();
    assert_eq!(transports, ["tcp", "ws"]);
}

under_both_drivers!(
    token_from_the_api_logs_in,
    admin_endpoints_need_the_secret,
    server_side_send_reaches_online_offline_and_groups,
    group_endpoints_change_who_receives,
    online_lists_sessions_and_transports,
);
