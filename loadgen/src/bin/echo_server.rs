//! `echo-server`: the loopback ceiling for the benchmark harness. A thread-per-core monoio
//! server (one SO_REUSEPORT listener per thread) that writes every byte it reads straight
//! back, so `loadgen --target echo p2p` measures what the machine moves through loopback with
//! the same frames, connections and client as the real runs, with no server work at all.

use std::net::SocketAddr;

use monoio::buf::IoBuf;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{ListenerOpts, TcpListener, TcpStream};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(19999);
    let threads = args
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                    .enable_timer()
                    .build()?;
                rt.block_on(async move {
                    let opts = ListenerOpts::new().reuse_port(true).backlog(1024);
                    let listener = TcpListener::bind_with_config(addr, &opts)?;
                    loop {
                        let (s, _) = listener.accept().await?;
                        monoio::spawn(echo(s));
                    }
                })
            })
        })
        .collect();
    eprintln!("echo-server: listening on {addr} with {threads} threads");
    for h in handles {
        if let Ok(Err(e)) = h.join() {
            return Err(e);
        }
    }
    Ok(())
}

async fn echo(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let (r, b) = s.read(buf).await;
        let n = match r {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let (r, b) = s.write_all(b.slice(..n)).await;
        if r.is_err() {
            return;
        }
        buf = b.into_inner();
    }
}
