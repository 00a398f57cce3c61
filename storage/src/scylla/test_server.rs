//! An in-process CQL server for wiring tests (feature `cql-test-server`), built on the
//! `kassandra` crate (an in-memory CQL v4 engine), so the `scylla` driver code path can run
//! in CI where no real ScyllaDB can be installed.
//!
//! It is *not* ScyllaDB and is trusted only for what it does right: connect, DDL as
//! unprepared queries, prepared INSERT, partition SELECT, paging, BATCH and single-row
//! DELETE. It mishandles range predicates (`seq > ?` acts like `seq >= ?`), ignores TTL and
//! ORDER BY and cannot do range deletes; the store filters on the client and never relies
//! on those, and tests must not assert them here. The full contract suite runs against a
//! real ScyllaDB when `SCYLLA_URI` is set.
//!
//! Two fixes are applied on the way:
//! - kassandra answers PREPARE with a bind marker for every literal in the WHERE clause (the
//!   driver prepares `... WHERE key = 'local'` while it connects), so the reply's bind
//!   metadata is cut to the number of `?` in the query text;
//! - kassandra's WHERE parser knows only `=`: it drops everything from the first `>` on,
//!   and the driver then refuses to bind the missing value. Query texts are rewritten from
//!   `col > ?` / `col >= ?` to `col = ?`, which kassandra evaluates on a clustering column
//!   as "from this value on" (`>=`). That is a superset of `>`; the store drops the rest on
//!   the client, as it must anyway to be independent of this.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use kassandra::error::DbError;
use kassandra::frame::request::{Request, RequestOpcode};
use kassandra::frame::response::error::Error;
use kassandra::frame::response::result::QueryResult;
use kassandra::frame::response::Response;
use kassandra::frame::{request_stream, response_sink};
use kassandra::session::KassandraSession;
use tokio::net::{TcpListener, TcpStream};

type Shared = Arc<Mutex<KassandraSession>>;

/// A running server; dropping it stops it and closes every connection.
pub struct CqlTestServer {
    addr: SocketAddr,
    rt: Option<tokio::runtime::Runtime>,
}

impl CqlTestServer {
    /// Starts on a free loopback port.
    pub fn start() -> std::io::Result<Self> {
        Self::start_at("127.0.0.1:0".parse().map_err(std::io::Error::other)?)
    }

    /// Starts on `addr` (e.g. a port a client is already trying to reach).
    pub fn start_at(addr: SocketAddr) -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cql-test-server")
            .enable_all()
            .build()?;
        let listener = rt.block_on(TcpListener::bind(addr))?;
        let addr = listener.local_addr()?;
        let db: Shared = Arc::new(Mutex::new(KassandraSession::new()));
        rt.spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let _ = s.set_nodelay(true);
                tokio::spawn(serve(db.clone(), s));
            }
        });
        Ok(Self { addr, rt: Some(rt) })
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for CqlTestServer {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Number of `?` bind markers outside string literals.
fn bind_markers(query: &str) -> usize {
    let mut n = 0;
    let mut quoted = false;
    for c in query.chars() {
        match c {
            '\'' => quoted = !quoted,
            '?' if !quoted => n += 1,
            _ => {}
        }
    }
    n
}

/// The query text at the start of a QUERY or PREPARE body (a `[long string]`).
fn query_text(data: &[u8]) -> Option<&str> {
    let len = u32::from_be_bytes(data.get(..4)?.try_into().ok()?) as usize;
    std::str::from_utf8(data.get(4..4 + len)?).ok()
}

/// The body with `> ?` and `>= ?` rewritten to `= ?` (see the module notes), or `None` when
/// there is nothing to rewrite.
fn rewrite_ranges(data: &[u8]) -> Option<Vec<u8>> {
    let text = query_text(data)?;
    if !text.contains('>') {
        return None;
    }
    let new = text.replace(">= ?", "= ?").replace("> ?", "= ?");
    let rest = &data[4 + text.len()..];
    let mut out = Vec::with_capacity(4 + new.len() + rest.len());
    out.extend_from_slice(&u32::try_from(new.len()).ok()?.to_be_bytes());
    out.extend_from_slice(new.as_bytes());
    out.extend_from_slice(rest);
    Some(out)
}

async fn serve(db: Shared, mut stream: TcpStream) {
    let (mut read, mut write) = stream.split();
    let mut requests = request_stream(&mut read);
    let mut sink = response_sink(&mut write);
    while let Some(Ok((frame, opcode, data))) = requests.next().await {
        let markers = (opcode == RequestOpcode::Prepare)
            .then(|| query_text(&data).map(bind_markers))
            .flatten();
        let rewritten = matches!(opcode, RequestOpcode::Prepare | RequestOpcode::Query)
            .then(|| rewrite_ranges(&data))
            .flatten();
        let data = rewritten.as_deref().unwrap_or(&data);
        let response = match Request::deserialize(opcode, data, frame.flags) {
            Err(_) => Response::Error(Error::new(DbError::ProtocolError, "unparsable request")),
            Ok(req) => {
                let mut db = db.lock().unwrap_or_else(|p| p.into_inner());
                let answer = match req {
                    Request::StartUp(_) | Request::Register { .. } => Ok(None),
                    Request::Options => Err(Response::options()),
                    Request::Query(q) => db.process(q).map(Some).map_err(Response::Error),
                    Request::Prepare(p) => db.prepare(p).map(Some).map_err(Response::Error),
                    Request::Execute(e) => db.execute(e).map(Some).map_err(Response::Error),
                    Request::Batch(b) => db.process_batch(b).map(Some).map_err(Response::Error),
                    Request::AuthResponse => Err(Response::Error(Error::new(
                        DbError::ProtocolError,
                        "authentication is not supported",
                    ))),
                };
                match answer {
                    Ok(None) => Response::Ready,
                    Ok(Some(mut result)) => {
                        if let (QueryResult::Prepared(p), Some(n)) = (&mut result, markers) {
                            let md = &mut p.prepared_metadata;
                            md.col_specs.truncate(n);
                            md.pk_indexes.retain(|i| usize::from(i.index) < n);
                        }
                        Response::Result(result)
                    }
                    Err(r) => r,
                }
            }
        };
        if sink.send((response, frame.stream)).await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_in_literals_do_not_count() {
        assert_eq!(bind_markers("SELECT a FROM t WHERE k = 'lo?cal'"), 0);
        assert_eq!(bind_markers("INSERT INTO t (a, b) VALUES (?, ?)"), 2);
    }

    #[test]
    fn range_predicates_become_equalities_and_the_rest_is_kept() {
        let q = "SELECT a FROM t WHERE k = ? AND c > ?";
        let mut body = (q.len() as u32).to_be_bytes().to_vec();
        body.extend_from_slice(q.as_bytes());
        body.extend_from_slice(&[0, 1]);
        let out = rewrite_ranges(&body).unwrap();
        assert_eq!(
            query_text(&out),
            Some("SELECT a FROM t WHERE k = ? AND c = ?")
        );
        assert_eq!(&out[out.len() - 2..], &[0, 1]);
    }
}
