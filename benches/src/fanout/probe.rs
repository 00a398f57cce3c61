//! The 1:1 latency probe, on its own thread.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use im_protocol::{framing, ClientPacket, ServerPacket};
use im_token::TokenAuth;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, Splitable};

use crate::client::{frame, hist, login, msg_id, parse_id};
use crate::{PROBE_FROM, PROBE_TO, SECRET};

pub const PROBE_OFF: u8 = 0;
pub const PROBE_IDLE: u8 = 1;
pub const PROBE_BUSY: u8 = 2;
pub const PROBE_STOP: u8 = 3;
pub const PROBE_STEADY: u8 = 4;

/// The 1:1 probe, on its own thread and runtime so the member connections' work on the
/// main client thread never delays it: a message every 2 ms from one non-member to
/// another; latencies are kept per phase (idle, busy). Returns (idle, busy).
pub async fn probe(port: u16, phase: Arc<AtomicU8>) -> [Histogram<u64>; 3] {
    let auth = TokenAuth::new(SECRET);
    let start = Instant::now();
    let to = login(port, PROBE_TO, &auth).await.expect("probe login");
    let (mut from_rd, mut from) = login(port, PROBE_FROM, &auth)
        .await
        .expect("probe")
        .into_split();
    let (mut rd, mut wr) = to.into_split();
    monoio::spawn(async move {
        let mut chunk = vec![0u8; 4096];
        loop {
            let (r, b) = from_rd.read(chunk).await;
            chunk = b;
            if !matches!(r, Ok(n) if n > 0) {
                return;
            }
        }
    });
    let hists = Rc::new(RefCell::new([hist(), hist(), hist()]));
    let h2 = hists.clone();
    let ph = phase.clone();
    monoio::spawn(async move {
        let mut acc = Vec::new();
        let mut chunk = vec![0u8; 4096];
        loop {
            let (r, b) = rd.read(chunk).await;
            chunk = b;
            match r {
                Ok(n) if n > 0 => acc.extend_from_slice(&chunk[..n]),
                _ => return,
            }
            let now = start.elapsed().as_micros() as u64;
            let mut acks = Vec::new();
            let used = framing::for_each(&acc, 1 << 20, |p| {
                if let Ok(ServerPacket::Push { msg_id, .. }) = ServerPacket::decode(p) {
                    if let Some((kind, _, t0)) = parse_id(msg_id) {
                        let lat = now.saturating_sub(t0).max(1);
                        let mut h = h2.borrow_mut();
                        match kind {
                            b'I' => drop(h[0].record(lat)),
                            b'S' => drop(h[1].record(lat)),
                            b'L' => drop(h[2].record(lat)),
                            _ => {}
                        }
                    }
                    acks.extend_from_slice(&frame(&ClientPacket::PubAck { msg_id }));
                }
                Ok::<(), ()>(())
            });
            match used {
                Ok(n) => drop(acc.drain(..n)),
                Err(_) => return,
            }
            let (r, _) = wr.write_all(acks).await;
            if r.is_err() || ph.load(Ordering::Relaxed) == PROBE_STOP {
                return;
            }
        }
    });
    let mut n = 0u64;
    loop {
        let kind = match phase.load(Ordering::Relaxed) {
            PROBE_IDLE => b'I',
            PROBE_STEADY => b'S',
            PROBE_BUSY => b'L',
            PROBE_STOP => break,
            _ => b'O',
        };
        let id = msg_id(kind, n, start.elapsed().as_micros() as u64);
        let (r, _) = from
            .write_all(frame(&ClientPacket::Publish {
                to: PROBE_TO,
                msg_id: &id,
                payload: b"probe",
            }))
            .await;
        r.expect("probe write");
        n += 1;
        monoio::time::sleep(Duration::from_millis(2)).await;
    }
    monoio::time::sleep(Duration::from_millis(100)).await;
    let h = hists.borrow();
    h.clone()
}
