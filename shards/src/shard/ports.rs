//! The two small traits through which the socket tasks reach their shard
//! ([`conn::Host`] for a connection's reader and writer, [`listener::Gate`] for the
//! listeners and pre-authentication), implemented by the driver.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use super::Shard;
use crate::auth::callback::AuthCallback;
use crate::auth::limiter::AuthLimiter;
use crate::auth::TokenAuth;
use crate::config::CoreConfig;
use crate::engine::{ConnId, Event, Time};
use crate::net::handoff::Handoff;
use crate::net::table::ConnTable;
use crate::net::{conn, listener};
use crate::route::mailbox::Mesh;
use crate::route::Mail;
use crate::stats::ShardStats;

impl conn::Host for Shard {
    fn cfg(&self) -> &CoreConfig {
        &self.cfg
    }

    fn now(&self) -> Time {
        super::now()
    }

    fn feed(self: &Rc<Self>, t: Time, ev: Event<'_>) {
        Shard::feed(self, t, ev)
    }

    fn after_dispatch(&self) {
        Shard::after_dispatch(self)
    }

    fn dispatch(self: &Rc<Self>, ev: Event<'_>) {
        Shard::dispatch(self, ev)
    }

    fn is_open(&self, conn: ConnId) -> bool {
        Shard::is_open(self, conn)
    }

    fn prefetch(&self, conn: ConnId, packet: &[u8]) {
        self.engine.borrow().prefetch(conn, packet)
    }

    fn poll_readable(&self, conn: ConnId, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        Shard::poll_readable(self, conn, cx)
    }

    fn conn_done(&self, conn: ConnId) {
        Shard::conn_done(self, conn)
    }

    fn conns(&self) -> &RefCell<ConnTable> {
        &self.conns
    }

    fn read_scratch(&self) -> &RefCell<Vec<u8>> {
        &self.read_buf
    }
}

impl listener::Gate for Shard {
    fn id(&self) -> usize {
        self.id
    }

    fn cfg(&self) -> &CoreConfig {
        &self.cfg
    }

    fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.clone()
    }

    fn auth(&self) -> &TokenAuth {
        &self.auth
    }

    fn limiter(&self) -> &AuthLimiter {
        &self.limiter
    }

    fn callback(&self) -> Option<&Arc<dyn AuthCallback>> {
        self.callback.as_ref()
    }

    fn stats(&self) -> &ShardStats {
        &self.stats
    }

    fn mesh(&self) -> &Mesh<Mail> {
        &self.mesh
    }

    fn attach(self: &Rc<Self>, h: Handoff) {
        Shard::attach(self, h)
    }

    fn relay_to(&self, uid: u32) -> Option<std::net::SocketAddr> {
        let engine = self.engine.borrow();
        engine.nodes()?.remote_home(uid).map(|n| n.relay)
    }
}
