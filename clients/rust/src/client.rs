//! The application's handles: [`Client`] to send and close, [`Events`] to receive.

use std::sync::Arc;

use bytes::Bytes;
use im_protocol::{ClientPacket, MsgId, Targets};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::command::Command;
use crate::config::{AckMode, ClientConfig};
use crate::error::{Error, SendError};
use crate::message::Event;
use crate::session::{login, Session};

/// A logged-in user. Cheap to clone; the session stops when the last clone is dropped or
/// [`Client::close`] is called.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    uid: u32,
    tx: mpsc::UnboundedSender<Command>,
    room: Arc<Semaphore>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Close { done: None });
    }
}

/// The client's events, in order ([`Event`]).
pub struct Events {
    rx: mpsc::UnboundedReceiver<Event>,
    mode: AckMode,
}

impl Events {
    /// The next event; `None` after [`Event::Stopped`] or [`Event::LoggedOut`]. Under
    /// [`AckMode::Auto`] a message is acknowledged as it is returned here.
    pub async fn recv(&mut self) -> Option<Event> {
        let ev = self.rx.recv().await?;
        if let (AckMode::Auto, Event::Message(m)) = (self.mode, &ev) {
            m.ack();
        }
        Some(ev)
    }
}

impl Client {
    /// Connects and logs in; returns once the server accepted the login (CONNECT_ACK 0).
    /// The first connection is not retried: a refused login, a wrong address or a timeout
    /// is an error here. From then on a background task (on the current tokio runtime)
    /// keeps the session and reconnects by itself.
    pub async fn connect(cfg: ClientConfig) -> Result<(Client, Events), Error> {
        let first = login(&cfg).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (etx, erx) = mpsc::unbounded_channel();
        let room = Arc::new(Semaphore::new(cfg.max_pending.max(1)));
        let mode = cfg.ack_mode;
        let uid = cfg.uid;
        tokio::spawn(Session::new(cfg, rx, tx.clone(), etx).run(first));
        Ok((
            Client {
                inner: Arc::new(Inner { uid, tx, room }),
            },
            Events { rx: erx, mode },
        ))
    }

    /// This client's user id.
    pub fn uid(&self) -> u32 {
        self.inner.uid
    }

    /// Sends `payload` to user `to` with a fresh id; returns the id once the server
    /// accepted it (PUB_ACK).
    pub async fn send(&self, to: u32, payload: &[u8]) -> Result<MsgId, SendError> {
        self.send_with_id(to, crate::new_msg_id(), payload).await
    }

    /// Like [`send`](Self::send) with the caller's id (a retry of a message whose outcome
    /// the application did not learn reuses its id: the server delivers it once).
    pub async fn send_with_id(
        &self,
        to: u32,
        id: MsgId,
        payload: &[u8],
    ) -> Result<MsgId, SendError> {
        check_payload(payload)?;
        let p = ClientPacket::Publish {
            to,
            msg_id: &id,
            payload,
        };
        self.publish(id, p.to_vec()).await
    }

    /// Sends `payload` to every member of group `gid` (but this session); returns the id
    /// once the server accepted it (GROUP_PUB_ACK).
    pub async fn send_group(&self, gid: u32, payload: &[u8]) -> Result<MsgId, SendError> {
        check_payload(payload)?;
        let id = crate::new_msg_id();
        let p = ClientPacket::GroupPublish {
            group: gid,
            msg_id: &id,
            payload,
        };
        self.publish(id, p.to_vec()).await
    }

    /// Sends `payload` to the listed members of group `gid`; returns the id once the server
    /// accepted it (GROUP_PART_PUB_ACK).
    pub async fn send_part(
        &self,
        gid: u32,
        targets: &[u32],
        payload: &[u8],
    ) -> Result<MsgId, SendError> {
        check_payload(payload)?;
        if targets.is_empty() || targets.len() > u16::MAX as usize {
            return Err(SendError::Invalid(
                "a part publish needs 1 to 65,535 targets",
            ));
        }
        let raw: Vec<u8> = targets.iter().flat_map(|t| t.to_be_bytes()).collect();
        let targets =
            Targets::from_raw(&raw).ok_or(SendError::Invalid("target list is not whole uids"))?;
        let id = crate::new_msg_id();
        let p = ClientPacket::GroupPartPublish {
            group: gid,
            msg_id: &id,
            targets,
            payload,
        };
        self.publish(id, p.to_vec()).await
    }

    async fn publish(&self, id: MsgId, frame: Vec<u8>) -> Result<MsgId, SendError> {
        let permit = Arc::clone(&self.inner.room)
            .acquire_owned()
            .await
            .map_err(|_| SendError::Stopped)?;
        let (reply, answer) = oneshot::channel();
        self.inner
            .tx
            .send(Command::Publish {
                id,
                frame: Bytes::from(frame),
                reply,
                permit,
            })
            .map_err(|_| SendError::Stopped)?;
        answer.await.unwrap_or(Err(SendError::Stopped))
    }

    /// Says goodbye (DISCONNECT) and stops the session; publishes still unanswered fail
    /// with [`SendError::Stopped`]. Messages not yet acknowledged stay on the server for
    /// the next login.
    pub async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self
            .inner
            .tx
            .send(Command::Close { done: Some(done) })
            .is_ok()
        {
            let _ = wait.await;
        }
    }
}

fn check_payload(payload: &[u8]) -> Result<(), SendError> {
    if payload.len() > u16::MAX as usize {
        return Err(SendError::Invalid("payload over 65,535 bytes"));
    }
    Ok(())
}
