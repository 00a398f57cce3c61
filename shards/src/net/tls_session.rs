//! An established TLS session on its owner shard: [`resume`] picks up the state and bytes
//! that came with the hand-off, then the session runs as a [`TlsReader`] and a
//! [`TlsWriter`] (the connection's two tasks), sharing the rustls state but no I/O buffer.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::rc::Rc;

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable,
};
use monoio::net::TcpStream;
use monoio::BufResult;
use rustls::ServerConnection;

use crate::net::tls::{
    invalid, read_plain, readv_plain, would_block_to_none, write_plain, writev_plain, PlainSink,
    PlainSource, TlsState,
};

/// On the owner shard: feeds the ciphertext that came along to rustls, moving everything it
/// decrypts (after the plaintext it already held) to the end of `plain`, then splits the
/// socket into the session's reader and writer. `plain` already holds what the accepting
/// shard read past CONNECT, which comes first.
pub(crate) fn resume(
    tcp: TcpStream,
    st: TlsState,
    plain: &mut Vec<u8>,
) -> io::Result<(TlsReader, TlsWriter)> {
    let mut conn = *st.conn;
    let mut cipher = &st.cipher[..];
    loop {
        drain_plaintext(&mut conn, plain)?;
        if cipher.is_empty() {
            break;
        }
        conn.read_tls(&mut cipher)?;
        conn.process_new_packets().map_err(invalid)?;
    }
    let (rd, wr) = tcp.into_split();
    let conn = Rc::new(RefCell::new(conn));
    Ok((
        TlsReader {
            tcp: rd,
            conn: conn.clone(),
            cipher: Vec::new(),
        },
        TlsWriter { tcp: wr, conn },
    ))
}

fn drain_plaintext(conn: &mut ServerConnection, out: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 4096];
    loop {
        match conn.reader().read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// The read side of an established TLS session. It never writes: TLS output rustls queues
/// while reading (alerts, key-update answers) goes out with the writer's next write. The
/// reader and the writer share the rustls state but no I/O buffer, and never hold the
/// state across an await, so they can run concurrently on the shard.
pub(crate) struct TlsReader {
    tcp: OwnedReadHalf<TcpStream>,
    conn: Rc<RefCell<ServerConnection>>,
    cipher: Vec<u8>,
}

/// The write side of an established TLS session.
pub(crate) struct TlsWriter {
    tcp: OwnedWriteHalf<TcpStream>,
    conn: Rc<RefCell<ServerConnection>>,
}

impl PlainSource for TlsReader {
    fn take_plain(&mut self, out: &mut [u8]) -> io::Result<Option<usize>> {
        would_block_to_none(self.conn.borrow_mut().reader().read(out))
    }

    /// Reads ciphertext (when none is buffered) and gives it to rustls. False at EOF.
    async fn pump(&mut self) -> io::Result<bool> {
        if self.cipher.is_empty() {
            let (r, buf) = self.tcp.read(std::mem::take(&mut self.cipher)).await;
            self.cipher = buf;
            if r? == 0 {
                return Ok(false);
            }
        }
        let mut conn = self.conn.borrow_mut();
        let n = conn.read_tls(&mut &self.cipher[..])?;
        self.cipher.drain(..n);
        conn.process_new_packets().map_err(invalid)?;
        Ok(true)
    }
}

impl AsyncReadRent for TlsReader {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        if self.cipher.capacity() == 0 {
            self.cipher.reserve(16 * 1024);
        }
        read_plain(self, buf).await
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        readv_plain(self, buf).await
    }
}

impl TlsWriter {
    /// Sends everything rustls has queued.
    async fn flush_tls(&mut self) -> io::Result<()> {
        loop {
            let mut out = Vec::new();
            {
                let mut conn = self.conn.borrow_mut();
                while conn.wants_write() {
                    conn.write_tls(&mut out)?;
                }
            }
            if out.is_empty() {
                return Ok(());
            }
            let (r, _) = self.tcp.write_all(out).await;
            r?;
        }
    }
}

impl PlainSink for TlsWriter {
    fn put_plain(&mut self, data: &[u8]) -> io::Result<usize> {
        self.conn.borrow_mut().writer().write(data)
    }

    async fn flush_tls(&mut self) -> io::Result<()> {
        TlsWriter::flush_tls(self).await
    }
}

impl AsyncWriteRent for TlsWriter {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        write_plain(self, buf).await
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        writev_plain(self, buf).await
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.flush_tls().await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.conn.borrow_mut().send_close_notify();
        self.flush_tls().await?;
        self.tcp.shutdown().await
    }
}
