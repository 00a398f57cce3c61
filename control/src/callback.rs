//! The HTTP authentication callback client (`auth.mode = "http"`, seed 000/003): a form POST
//! of `username`, `password` and `role` to `auth.http_url` with the seed's headers, run on
//! the control runtime (tokio + hyper) and awaited by the shard doing the CONNECT. Bounded:
//! at most `http_max_inflight` calls at once, each cut off after `http_timeout_ms`, replies
//! read up to 64 KiB. Every failure is `Unavailable` (CONNECT_ACK 4), never a pass.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{ACCEPT, CONTENT_TYPE};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use im_shards::callback::{parse_reply, AuthCallback, Verdict};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

/// Largest reply body read.
const MAX_REPLY: usize = 64 * 1024;

/// The callback client; cheap to share.
pub struct HttpCallback {
    client: Client<HttpConnector, Full<Bytes>>,
    url: Uri,
    timeout: Duration,
    slots: Arc<Semaphore>,
    rt: Handle,
}

/// The callback URL is not usable.
#[derive(Debug, thiserror::Error)]
#[error("auth.http_url {url:?} is not a valid http:// URL: {why}")]
pub struct BadUrl {
    url: String,
    why: String,
}

impl HttpCallback {
    pub fn new(
        url: &str,
        timeout: Duration,
        max_inflight: usize,
        rt: Handle,
    ) -> Result<Self, BadUrl> {
        let bad = |why: String| BadUrl {
            url: url.to_string(),
            why,
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| bad(e.to_string()))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("only http:// is supported".into()));
        }
        let client = {
            let _guard = rt.enter();
            Client::builder(TokioExecutor::new()).build_http()
        };
        Ok(Self {
            client,
            url: uri,
            timeout,
            slots: Arc::new(Semaphore::new(max_inflight.max(1))),
            rt,
        })
    }
}

/// `username=…&password=…&role=…`, bytes percent-encoded as a form.
pub fn form_body(username: &[u8], password: &[u8], role: u8) -> String {
    let mut out = String::from("username=");
    out.extend(form_urlencoded::byte_serialize(username));
    out.push_str("&password=");
    out.extend(form_urlencoded::byte_serialize(password));
    out.push_str("&role=");
    out.push_str(&role.to_string());
    out
}

async fn call(
    client: Client<HttpConnector, Full<Bytes>>,
    url: Uri,
    body: String,
) -> Result<Verdict, String> {
    let req = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header(ACCEPT, "application/json")
        .header(
            CONTENT_TYPE,
            "application/x-www-form-urlencoded;charset=utf-8",
        )
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = client
        .request(req)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("callback answered HTTP {status}"));
    }
    let body = Limited::new(resp.into_body(), MAX_REPLY)
        .collect()
        .await
        .map_err(|e| format!("reading the reply: {e}"))?
        .to_bytes();
    Ok(parse_reply(&body))
}

impl AuthCallback for HttpCallback {
    fn check(
        &self,
        username: Vec<u8>,
        password: Vec<u8>,
        role: u8,
    ) -> Pin<Box<dyn Future<Output = Verdict> + Send + 'static>> {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            return Box::pin(std::future::ready(Verdict::Unavailable(
                "too many authentication calls in flight".into(),
            )));
        };
        let (client, url, timeout) = (self.client.clone(), self.url.clone(), self.timeout);
        let body = form_body(&username, &password, role);
        let task = self.rt.spawn(async move {
            let r = tokio::time::timeout(timeout, call(client, url, body)).await;
            drop(permit);
            match r {
                Ok(Ok(v)) => v,
                Ok(Err(why)) => Verdict::Unavailable(why),
                Err(_) => Verdict::Unavailable(format!("no answer within {timeout:?}")),
            }
        });
        Box::pin(async move {
            task.await
                .unwrap_or_else(|e| Verdict::Unavailable(format!("callback task failed: {e}")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encodes_bytes() {
        assert_eq!(
            form_body(b"42", b"a b&c=d", 1),
            "username=42&password=a+b%26c%3Dd&role=1"
        );
        assert_eq!(form_body(&[0xff], b"", 0), "username=%FF&password=&role=0");
    }
}
