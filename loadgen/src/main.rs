//! `loadgen`: drives the IM server (or an MQTT broker, or the echo baseline) with many
//! connections from a thread-per-core client, checks every message for loss, duplication and
//! order, and reports HDR latency percentiles and throughput. See `loadgen --help` and the
//! README's benchmark section.

mod check;
mod cli;
mod conn;
mod link;
mod local;
mod mqtt_wire;
mod pace;
mod proto;
mod report;
mod runner;
mod scenario;
mod stamp;
mod sys;
mod window;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;
use std::sync::{Arc, Barrier};

use anyhow::Context as _;
use clap::Parser;

use cli::{Cli, Common, Scenario, Target, Transport};
use conn::{Endpoint, Framing};
use proto::Proto;
use report::{Labels, Report};
use runner::Ctx;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(report) => {
            if report.check_failed() {
                eprintln!(
                    "loadgen: CHECK FAILED: {} lost, {} duplicated, {} reordered, {} unexpected",
                    report.lost, report.duplicated, report.reordered, report.unexpected
                );
                return ExitCode::from(2);
            }
            if report.errors.contains_key("setup_failed") {
                return ExitCode::from(3);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<Report> {
    let c = cli.common.clone();
    validate(&c, &cli.scenario)?;
    let run_id: u32 = rand::random();
    let uid_base = c
        .uid_base
        .unwrap_or(1_000_000 + (run_id % 1000) * 1_000_000);
    let threads = c.threads();
    let conns = connections(&cli.scenario, threads);
    sys::ensure_fds(conns).map_err(anyhow::Error::msg)?;
    let server_pid = match &cli.scenario {
        Scenario::Idle(a) => a.server_pid,
        Scenario::Offline(a) => a.server_pid,
        _ => None,
    };
    let ctx = Arc::new(Ctx {
        ep: endpoint(&c)?,
        proto: match c.target {
            Target::Im => Proto::Im {
                auth: Arc::new(im_token::TokenAuth::new(&c.secret)),
            },
            Target::Mqtt => Proto::Mqtt,
            Target::Echo => Proto::Echo,
        },
        run: run_id,
        uid_base,
        threads,
        ready: Barrier::new(threads),
        server_pid,
        common: c.clone(),
    });
    let (name, results) = match cli.scenario.clone() {
        Scenario::P2p(a) => (
            "p2p",
            runner::run(ctx, move |t, ctx, l| {
                scenario::p2p::run(t, ctx, l, a.clone())
            })?,
        ),
        Scenario::Group(a) => {
            if c.target == Target::Im {
                scenario::group::setup(&c.admin_url, &c.admin_secret, uid_base, &a)?;
            }
            let b = a.clone();
            let r = runner::run(ctx, move |t, ctx, l| {
                scenario::group::run(t, ctx, l, b.clone())
            });
            if c.target == Target::Im {
                scenario::group::teardown(&c.admin_url, &c.admin_secret, uid_base, &a);
            }
            ("group", r?)
        }
        Scenario::Connect(a) => (
            "connect",
            runner::run(ctx, move |t, ctx, l| {
                scenario::connect::run(t, ctx, l, a.clone())
            })?,
        ),
        Scenario::Idle(a) => {
            let before = scenario::idle::before(a.server_pid);
            let me = sys::rss_bytes(std::process::id());
            (
                "idle",
                runner::run(ctx, move |t, ctx, l| {
                    scenario::idle::run(t, ctx, l, a.clone(), before, me)
                })?,
            )
        }
        Scenario::Offline(a) => (
            "offline",
            runner::run(ctx, move |t, ctx, l| {
                scenario::offline::run(t, ctx, l, a.clone())
            })?,
        ),
    };
    let labels = Labels {
        scenario: name.into(),
        target: format!("{:?}", c.target).to_lowercase(),
        transport: match c.target {
            Target::Im => format!("{:?}", c.transport).to_lowercase(),
            _ => "tcp".into(),
        },
        threads,
        payload_bytes: c.size,
    };
    let report = Report::merge(labels, results);
    if c.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(report)
}

/// Refuses combinations that cannot run, before any connection is made.
fn validate(c: &Common, s: &Scenario) -> anyhow::Result<()> {
    if c.target != Target::Im && c.transport != Transport::Tcp {
        anyhow::bail!("--transport {:?} is for --target im only", c.transport);
    }
    match (c.target, s) {
        (Target::Mqtt, Scenario::Offline(_)) => {
            anyhow::bail!("the offline scenario is for --target im")
        }
        (Target::Echo, Scenario::Group(_) | Scenario::Offline(_)) => {
            anyhow::bail!("the echo baseline runs p2p, connect and idle only")
        }
        (Target::Mqtt, _) if c.size < stamp::LEN => {
            anyhow::bail!(
                "--size must be at least {} for MQTT (the stamp is in the payload)",
                stamp::LEN
            )
        }
        (_, Scenario::Group(g)) if g.members < 2 => {
            anyhow::bail!("a group needs 2 members or more")
        }
        (_, Scenario::P2p(p)) if 2 * p.pairs > stamp::MAX_STREAMS => {
            anyhow::bail!("too many pairs")
        }
        _ => Ok(()),
    }
}

/// Connections the scenario opens at its peak.
fn connections(s: &Scenario, threads: usize) -> u64 {
    match s {
        Scenario::P2p(a) => 2 * a.pairs as u64,
        Scenario::Group(a) => a.groups as u64 * a.members as u64,
        Scenario::Connect(a) => a.concurrency as u64 * threads as u64,
        Scenario::Idle(a) => a.conns as u64,
        Scenario::Offline(a) => a.receivers as u64 + a.senders as u64 + threads as u64,
    }
}

fn endpoint(c: &Common) -> anyhow::Result<Endpoint> {
    let framing = match (c.target, c.transport) {
        (Target::Mqtt, _) => Framing::Mqtt,
        (Target::Im, Transport::Ws | Transport::Wss) => Framing::Ws,
        _ => Framing::Prefix,
    };
    let ws = framing == Framing::Ws;
    let tls = if c.target == Target::Im && c.transport == Transport::Wss {
        Some(tls_connector(c)?)
    } else {
        None
    };
    let addrs = if c.targets.is_empty() {
        vec![SocketAddrV4::new(c.host, c.port())]
    } else {
        c.targets.clone()
    };
    let loopback = addrs.iter().all(|a| a.ip().is_loopback());
    let homes = (c.connect_home || c.targets.len() > 1).then(|| {
        Arc::new(conn::Homes::new(
            c.admin_url.clone(),
            c.admin_secret.clone(),
        ))
    });
    Ok(Endpoint {
        homes,
        connect_home: c.connect_home,
        addrs: Arc::new(addrs),
        framing,
        ws_path: ws.then(|| c.ws_path()),
        tls,
        sources: Arc::new(if loopback {
            (1..=c.source_addrs.max(1))
                .map(|i| Ipv4Addr::new(127, 0, 0, i))
                .collect()
        } else {
            Vec::new()
        }),
    })
}

fn tls_connector(
    c: &Common,
) -> anyhow::Result<(
    monoio_rustls::TlsConnector,
    rustls::pki_types::ServerName<'static>,
)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = if c.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(tls::AcceptAny(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let path =
            c.ca.as_ref()
                .context("wss needs --ca FILE (the server's CA or certificate) or --insecure")?;
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
            roots.add(cert.context("parsing the CA file")?)?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    let name = rustls::pki_types::ServerName::try_from(c.server_name.clone())
        .context("--server-name is not a valid name")?;
    Ok((monoio_rustls::TlsConnector::from(config), name))
}

mod tls;
