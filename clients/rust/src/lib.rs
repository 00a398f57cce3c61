//! `imclient`: a client library for imserver (the seed binary IM protocol).
//!
//! One [`Client`] is one logged-in user on one server. It connects over length-prefixed TCP,
//! TCP inside TLS, WebSocket or WebSocket inside TLS ([`Endpoint`]), sends CONNECT with a
//! token, and then keeps the session alive on a background tokio task:
//!
//! - [`Client::send`], [`Client::send_group`] and [`Client::send_part`] return once the
//!   server accepted the message (PUB_ACK, GROUP_PUB_ACK, GROUP_PART_PUB_ACK) or refused it
//!   (PUB_ERR with its code: the extension flag is on by default);
//! - incoming messages arrive on [`Events`]; they are acknowledged when the application
//!   takes them ([`AckMode::Auto`]) or when it calls [`Message::ack`] ([`AckMode::Manual`]);
//!   a redelivered copy of a message already handed to the application is dropped (and
//!   acknowledged again when the application had acknowledged it);
//! - server heartbeats are answered; with extensions the client also pings a quiet
//!   connection and treats one that stays silent as dead;
//! - a lost connection is re-established with exponential back-off and jitter; publishes
//!   not yet acknowledged are sent again with the same MsgId (the server de-duplicates
//!   them) and the server's offline backlog arrives as ordinary messages;
//! - being logged out by a login of the same user elsewhere is [`Event::LoggedOut`], after
//!   which the client stops: reconnecting would log the other device out in turn.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use imclient::{Client, ClientConfig, Event};
//!
//! let cfg = ClientConfig::new("tcp://127.0.0.1:19095".parse()?, 42, "<token>");
//! let (client, mut events) = Client::connect(cfg).await?;
//! client.send(43, b"hello").await?;
//! while let Some(event) = events.recv().await {
//!     if let Event::Message(m) = event {
//!         println!("from {:?}: {:?}", m.sender(), m.text());
//!     }
//! }
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod backoff;
mod client;
mod command;
mod config;
mod error;
mod message;
mod recent;
mod session;
mod transport;

pub use backoff::Backoff;
pub use client::{Client, Events};
pub use config::{AckMode, ClientConfig, Endpoint, Scheme};
pub use error::{Error, SendError};
pub use im_protocol::MsgId;
pub use message::{Envelope, Event, Kind, Message};

/// A fresh message id: a random UUID as 32 lowercase hex characters, what the protocol's
/// clients send.
pub fn new_msg_id() -> MsgId {
    let mut id = [0u8; 32];
    uuid::Uuid::new_v4().simple().encode_lower(&mut id);
    id
}
