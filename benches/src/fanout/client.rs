//! The client side: logins, message ids that carry their send time, member connections that
//! record and ack what they receive, and the sender's windowed phases.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use im_protocol::{framing, ClientPacket, ServerPacket};
use im_token::TokenAuth;
use monoio::io::{
    AsyncReadRent, AsyncReadRentExt, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf,
};
use monoio::net::TcpStream;

use crate::DEADLINE;

pub fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// What the receivers record.
pub struct State {
    pub start: Instant,
    /// Group message seq → members still to receive it.
    pub pending: RefCell<HashMap<u64, u32>>,
    pub fanout: RefCell<Histogram<u64>>,
    pub delivery: RefCell<Histogram<u64>>,
    pub delivered: Cell<u64>,
    pub completed: Cell<u64>,
    /// The controller waiting for `completed` to move.
    pub waiter: Cell<Option<Waker>>,
}

impl State {
    fn complete(&self) {
        self.completed.set(self.completed.get() + 1);
        if let Some(w) = self.waiter.take() {
            w.wake();
        }
    }

    /// Resolves once `completed >= n`.
    async fn completed_at_least(&self, n: u64) {
        poll_fn(|cx| {
            if self.completed.get() >= n {
                Poll::Ready(())
            } else {
                self.waiter.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }

    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
}

/// Message ids carry a kind, a sequence number and the send time (µs since start).
pub fn msg_id(kind: u8, seq: u64, t0: u64) -> [u8; 32] {
    let s = format!("{}{seq:015x}{t0:016x}", kind as char);
    let mut id = [0u8; 32];
    id.copy_from_slice(s.as_bytes());
    id
}

pub fn parse_id(id: &[u8; 32]) -> Option<(u8, u64, u64)> {
    let s = std::str::from_utf8(&id[1..]).ok()?;
    Some((
        id[0],
        u64::from_str_radix(&s[..15], 16).ok()?,
        u64::from_str_radix(&s[15..], 16).ok()?,
    ))
}

pub fn frame(p: &ClientPacket<'_>) -> Vec<u8> {
    let body = p.to_vec();
    let mut out = Vec::with_capacity(body.len() + 4);
    framing::put_prefix(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

pub async fn login(port: u16, uid: u32, auth: &TokenAuth) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    s.set_nodelay(true)?;
    let token = auth
        .mint(uid, Duration::from_secs(3600))
        .map_err(std::io::Error::other)?;
    let uid_s = uid.to_string();
    let connect = frame(&ClientPacket::Connect {
        username: uid_s.as_bytes(),
        password: token.as_bytes(),
        role: Some(0),
        flags: Some(1),
    });
    let (r, _) = s.write_all(connect).await;
    r?;
    let (r, buf) = s.read_exact(vec![0u8; 6]).await;
    r?;
    if buf != [0, 0, 0, 2, 2, 0] {
        return Err(std::io::Error::other(format!(
            "uid {uid}: CONNECT refused: {buf:?}"
        )));
    }
    Ok(s)
}

/// Reads pushes, records them, and acks them (one write per read).
pub async fn receiver(
    mut rd: OwnedReadHalf<TcpStream>,
    mut wr: OwnedWriteHalf<TcpStream>,
    st: Rc<State>,
) {
    let mut acc: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let (r, b) = rd.read(chunk).await;
        chunk = b;
        match r {
            Ok(0) | Err(_) => return,
            Ok(n) => acc.extend_from_slice(&chunk[..n]),
        }
        let mut acks = Vec::new();
        let used = framing::for_each(&acc, 1 << 20, |p| {
            let ack = match ServerPacket::decode(p) {
                Ok(ServerPacket::GroupPush { msg_id, .. }) => {
                    on_group(&st, msg_id);
                    Some(ClientPacket::GroupPubAck { msg_id })
                }
                Ok(ServerPacket::Push { msg_id, .. }) => {
                    on_direct(&st, msg_id);
                    Some(ClientPacket::PubAck { msg_id })
                }
                _ => None,
            };
            if let Some(a) = ack {
                acks.extend_from_slice(&frame(&a));
            }
            Ok::<(), ()>(())
        });
        match used {
            Ok(n) => {
                acc.drain(..n);
            }
            Err(_) => return,
        }
        if !acks.is_empty() {
            let (r, _) = wr.write_all(acks).await;
            if r.is_err() {
                return;
            }
        }
    }
}

fn on_group(st: &State, id: &[u8; 32]) {
    let Some((_, seq, t0)) = parse_id(id) else {
        return;
    };
    let now = st.now_us();
    let _ = st
        .delivery
        .borrow_mut()
        .record(now.saturating_sub(t0).max(1));
    st.delivered.set(st.delivered.get() + 1);
    let mut pending = st.pending.borrow_mut();
    if let Some(left) = pending.get_mut(&seq) {
        *left -= 1;
        if *left == 0 {
            pending.remove(&seq);
            let _ = st.fanout.borrow_mut().record(now.saturating_sub(t0).max(1));
            st.complete();
        }
    }
}

fn on_direct(st: &State, id: &[u8; 32]) {
    let Some((_, _, t0)) = parse_id(id) else {
        return;
    };
    let lat = st.now_us().saturating_sub(t0).max(1);
    let _ = st.delivery.borrow_mut().record(lat);
    st.delivered.set(st.delivered.get() + 1);
    st.complete();
}

/// Discards what the sender's connection receives (its acks).
pub async fn drain(mut rd: OwnedReadHalf<TcpStream>) {
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let (r, b) = rd.read(chunk).await;
        chunk = b;
        if !matches!(r, Ok(n) if n > 0) {
            return;
        }
    }
}

/// Sends `count` messages built by `make(seq, t0)` keeping at most `window` unfinished;
/// returns the elapsed time once all completed.
pub async fn run_phase(
    st: &State,
    wr: &mut OwnedWriteHalf<TcpStream>,
    count: u64,
    window: u64,
    fanout: u32,
    seq0: u64,
    make: impl Fn(u64, u64) -> Vec<u8>,
) -> Duration {
    let base = st.completed.get();
    let t = Instant::now();
    for i in 0..count {
        if i >= window {
            st.completed_at_least(base + i + 1 - window).await;
        }
        let seq = seq0 + i;
        if fanout > 0 {
            st.pending.borrow_mut().insert(seq, fanout);
        }
        let (r, _) = wr.write_all(make(seq, st.now_us())).await;
        r.expect("sender write");
    }
    monoio::select! {
        _ = st.completed_at_least(base + count) => {}
        _ = monoio::time::sleep(DEADLINE.saturating_sub(st.start.elapsed())) => {
            panic!("benchmark deadline passed");
        }
    }
    t.elapsed()
}
