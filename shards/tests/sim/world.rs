//! The simulated world: shard engines, the network between them (mail with latency,
//! FIFO per pair), a store (one FIFO queue of operations, as the storage thread), group
//! membership, clients, a virtual clock and faults, all driven by one seeded generator.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use im_protocol::packet::push_msg_id;
use im_protocol::MsgId;
use im_shards::config::{DuplicateLogin, Persist};
use im_shards::engine::{
    Action, Batch, ConnId, Delivery, Engine, Event, Failed, Members, Out, Time, Token,
};
use im_shards::stats::ShardStats;
use im_shards::CoreConfig;
use im_storage::StoredMessage;

use crate::ledger::{self, Ledger};
use crate::rng::Rng;

mod actions;
mod client;

/// `SIM_TRACE` is set: print what happens (read once; asked on every event).
fn tracing() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("SIM_TRACE").is_ok())
}

/// Traces the message ids of stored copies (`what`: "appends", "stores").
fn trace_frames(now: Time, shard: usize, what: &str, msgs: &[(u32, Bytes)]) {
    if tracing() {
        for (u, f) in msgs {
            if let Some(id) = push_msg_id(f) {
                eprintln!(
                    "t={} shard {shard} {what} {:?} for user {u}",
                    now.0,
                    ledger::parse(id)
                );
            }
        }
    }
}

/// Work in flight outside the engines, due at a time.
enum Job {
    Mail {
        to: usize,
        mail: Mail,
    },
    Store(StoreOp),
    Resolve {
        shard: usize,
        token: Token,
        gid: u32,
        fail: bool,
    },
}

enum Mail {
    Deliver(Delivery),
    Fanout(Batch),
}

enum StoreOp {
    Append {
        shard: usize,
        token: Option<Token>,
        msgs: Vec<(u32, Bytes)>,
        fail: bool,
    },
    Remove {
        uid: u32,
        seqs: Vec<u64>,
    },
    Fetch {
        shard: usize,
        token: Token,
        uid: u32,
        after: u64,
        limit: usize,
        fail: bool,
    },
}

/// One client connection.
struct Conn {
    uid: u32,
    /// Items the server queued and the client has not read yet, with their emit number.
    wire: VecDeque<(u64, Out)>,
    /// The server asked to close it (`Out::Close` queued).
    closing: bool,
    /// Read by the client (the session is gone once `Close` is read).
    gone: bool,
    /// Reads nothing while set (a slow reader).
    slow: bool,
    /// Pushes received and not yet acked: (ack command, id).
    to_ack: Vec<(u8, MsgId)>,
    /// Receipts per message on this session.
    receipts: HashMap<MsgId, u32>,
    /// When each push was last written to this session (redelivery spacing).
    pushed_at: HashMap<MsgId, Time>,
    /// Per (sender, sending connection, 1:1 or group): the highest counter first received.
    order: HashMap<(u32, u64, bool), u64>,
    acked_here: HashMap<MsgId, u64>,
}

/// What one run is set up with.
#[derive(Debug, Clone)]
pub struct Setup {
    pub shards: usize,
    pub users: u32,
    pub persist: Persist,
    pub policy: DuplicateLogin,
    pub store_fail: f64,
    pub crash: f64,
}

pub struct World {
    pub rng: Rng,
    pub setup: Setup,
    cfg: Arc<CoreConfig>,
    now: Time,
    engines: Vec<Engine>,
    jobs: BTreeMap<(Time, u64), Job>,
    job_seq: u64,
    /// Latest due time per (from, to) mail pair and for the store queue (FIFO).
    mail_last: Vec<Vec<Time>>,
    store_last: Time,
    /// The durable store: uid → seq → frame.
    store: HashMap<u32, BTreeMap<u64, Bytes>>,
    next_seq: u64,
    groups: HashMap<u32, Vec<u32>>,
    conns: HashMap<(usize, ConnId), Conn>,
    next_conn: ConnId,
    counters: HashMap<u32, u64>,
    /// Sent by a client and not acknowledged yet: the packet and when it was first sent.
    unacked: HashMap<MsgId, (Vec<u8>, Time)>,
    emit: u64,
    pub ledger: Ledger,
    pub steps: u64,
    replies: u64,
}

impl World {
    pub fn new(seed: u64) -> World {
        let mut rng = Rng::new(seed);
        let setup = Setup {
            shards: rng.range(1, 3) as usize,
            users: rng.range(3, 8) as u32,
            persist: if rng.chance(0.5) {
                Persist::BeforeAck
            } else {
                Persist::OnFailure
            },
            policy: *rng.pick(&[
                DuplicateLogin::KickOld,
                DuplicateLogin::Reject,
                DuplicateLogin::Multi,
            ]),
            store_fail: *rng.pick(&[0.0, 0.02, 0.1]),
            crash: *rng.pick(&[0.0, 0.0005, 0.002]),
        };
        let mut cfg = CoreConfig::default();
        cfg.runtime.shards = setup.shards;
        cfg.delivery.persist = setup.persist;
        cfg.session.duplicate_login = setup.policy;
        cfg.session.max_devices = 2;
        cfg.session.max_inflight = rng.range(4, 16) as usize;
        cfg.session.send_queue = rng.range(8, 32) as usize;
        cfg.delivery.offline_page = rng.range(2, 8) as usize;
        cfg.delivery.redelivery_interval_ms = 2_000;
        cfg.delivery.redelivery_max = 3;
        cfg.session.heartbeat_interval_ms = 30_000;
        cfg.session.heartbeat_timeout_ms = 10_000;
        cfg.groups.fanout_chunk = rng.range(1, 4) as usize;
        let cfg = Arc::new(cfg);
        let mut groups = HashMap::new();
        for gid in 1..=2u32 {
            let members: Vec<u32> = (1..=setup.users).filter(|_| rng.chance(0.7)).collect();
            groups.insert(gid, members);
        }
        let engines = (0..setup.shards)
            .map(|i| {
                Engine::new(
                    i,
                    setup.shards,
                    cfg.clone(),
                    Arc::new(ShardStats::default()),
                )
            })
            .collect();
        World {
            mail_last: vec![vec![Time(0); setup.shards]; setup.shards],
            rng,
            cfg,
            now: Time(1_000_000),
            engines,
            jobs: BTreeMap::new(),
            job_seq: 0,
            store_last: Time(0),
            store: HashMap::new(),
            next_seq: 1,
            groups,
            conns: HashMap::new(),
            next_conn: 1,
            counters: HashMap::new(),
            unacked: HashMap::new(),
            emit: 0,
            ledger: Ledger::default(),
            steps: 0,
            replies: 0,
            setup,
        }
    }

    // ---- the engines and what they ask for -------------------------------------------

    fn feed(&mut self, shard: usize, ev: Event<'_>) -> Result<(), String> {
        let mut actions = Vec::new();
        self.engines[shard].handle(self.now, ev, &mut actions);
        for a in actions {
            self.carry_out(shard, a)?;
        }
        self.engines[shard]
            .check()
            .map_err(|e| format!("shard {shard}: {e}"))
    }

    fn schedule(&mut self, at: Time, job: Job) {
        self.job_seq += 1;
        self.jobs.insert((at, self.job_seq), job);
    }

    fn latency(&mut self, max_ms: u64) -> Time {
        Time(self.now.0 + self.rng.range(0, max_ms * 1000))
    }

    fn store_op(&mut self, op: StoreOp) {
        let at = self.latency(30).max(self.store_last);
        self.store_last = at;
        self.schedule(at, Job::Store(op));
    }

    fn mail(&mut self, from: usize, to: usize, mail: Mail) {
        // Now and then a long stall, as a full mailbox would cause.
        let max = if self.rng.chance(0.05) { 500 } else { 5 };
        let at = self.latency(max).max(self.mail_last[from][to]);
        self.mail_last[from][to] = at;
        self.schedule(at, Job::Mail { to, mail });
    }

    /// Runs every job due by now.
    fn run_due(&mut self) -> Result<(), String> {
        while let Some(entry) = self.jobs.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let job = entry.remove();
            self.run_job(job)?;
        }
        Ok(())
    }

    /// Every shard's memory is lost; the store survives (what it applied).
    fn crash(&mut self) {
        if tracing() {
            eprintln!("t={} CRASH", self.now.0);
        }
        self.ledger.crash();
        self.jobs.clear();
        self.conns.clear();
        self.unacked.clear();
        self.engines = (0..self.setup.shards)
            .map(|i| {
                Engine::new(
                    i,
                    self.setup.shards,
                    self.cfg.clone(),
                    Arc::new(ShardStats::default()),
                )
            })
            .collect();
    }

    fn advance(&mut self, max_ms: u64) -> Result<(), String> {
        self.now = self.latency(max_ms);
        self.run_due()?;
        for s in 0..self.setup.shards {
            self.feed(s, Event::Tick)?;
        }
        Ok(())
    }

    /// One random step of the schedule.
    pub fn step(&mut self) -> Result<(), String> {
        self.steps += 1;
        self.run_due()?;
        // The driver's fan-out worker serves a step whenever there is a backlog, between
        // other tasks.
        for s in 0..self.setup.shards {
            if self.engines[s].fanout_backlog() > 0 && self.rng.chance(0.7) {
                self.feed(s, Event::FanoutStep)?;
            }
        }
        let live = self.live_conns();
        let roll = self.rng.below(100);
        match roll {
            0..=9 => {
                let uid = self.rng.range(1, self.setup.users as u64) as u32;
                self.connect(uid)?;
            }
            10..=34 if !live.is_empty() => {
                let k = *self.rng.pick(&live);
                self.publish(k)?;
            }
            35..=59 => {
                let all: Vec<_> = {
                    let mut v: Vec<_> = self.conns.keys().copied().collect();
                    v.sort_unstable();
                    v
                };
                if !all.is_empty() {
                    let k = *self.rng.pick(&all);
                    if !self.conns[&k].slow {
                        self.read(k, 0.8)?;
                    }
                }
            }
            60..=64 if !live.is_empty() => {
                let k = *self.rng.pick(&live);
                self.disconnect(k)?;
            }
            65..=67 if !live.is_empty() => {
                let k = *self.rng.pick(&live);
                self.retransmit(k)?;
            }
            68..=69 if !live.is_empty() => {
                let k = *self.rng.pick(&live);
                if let Some(c) = self.conns.get_mut(&k) {
                    c.slow = !c.slow;
                }
            }
            70 if !live.is_empty() => {
                let k = *self.rng.pick(&live);
                self.send(k, &[vec![0xEE, 1, 2]])?; // not a command: the session ends
            }
            71..=72 => self.system_send()?,
            73..=94 => self.advance(300)?,
            95 => self.advance(3_000)?,
            _ => {
                if self.rng.chance(self.setup.crash * 25.0) {
                    self.crash();
                }
            }
        }
        Ok(())
    }

    /// Ends the run: no more faults; every client reconnects once and reads and acks
    /// everything until nothing moves. Then every acknowledged message must have reached
    /// every recipient, and the store must be empty.
    pub fn settle(&mut self) -> Result<(), String> {
        self.setup.store_fail = 0.0;
        for k in self.live_conns() {
            self.disconnect(k)?;
        }
        for _ in 0..50 {
            self.advance(100)?;
            for s in 0..self.setup.shards {
                while self.engines[s].fanout_backlog() > 0 {
                    self.feed(s, Event::FanoutStep)?;
                }
            }
        }
        for c in self.conns.values_mut() {
            c.slow = false;
        }
        for uid in 1..=self.setup.users {
            self.connect(uid)?;
        }
        for round in 0..2_000 {
            self.run_due()?;
            for s in 0..self.setup.shards {
                while self.engines[s].fanout_backlog() > 0 {
                    self.feed(s, Event::FanoutStep)?;
                }
            }
            let mut keys: Vec<_> = self.conns.keys().copied().collect();
            keys.sort_unstable();
            for k in keys {
                self.read(k, 1.0)?;
            }
            let idle = self.jobs.is_empty()
                && self
                    .conns
                    .values()
                    .all(|c| c.wire.is_empty() && c.to_ack.is_empty())
                && self
                    .engines
                    .iter()
                    .all(|e| e.commits_pending() == 0 && e.fanout_backlog() == 0);
            if idle && round > 10 {
                break;
            }
            self.advance(50)?;
        }
        let stored: usize = self.store.values().map(BTreeMap::len).sum();
        let sessions: Vec<usize> = self.engines.iter().map(Engine::session_count).collect();
        self.ledger
            .check_all_delivered(self.setup.persist == Persist::OnFailure)
            .map_err(|e| {
                format!(
                    "{e}; {stored} stored, sessions per shard {sessions:?}, {} jobs",
                    self.jobs.len()
                )
            })?;
        let left: usize = self.store.values().map(BTreeMap::len).sum();
        if left > 0 {
            let users: HashSet<u32> = self
                .store
                .iter()
                .filter(|(_, m)| !m.is_empty())
                .map(|(u, _)| *u)
                .collect();
            return Err(format!(
                "{left} message(s) still stored after everyone reconnected and acked (users {users:?})"
            ));
        }
        Ok(())
    }
}
