//! A terminal chat: log in as one user, print what arrives, send what you type.
//!
//! ```sh
//! cargo run --release -- token --uid 42        # the server prints a token
//! cargo run -p imclient --example chat -- --uid 42 --token <token> --to 43
//! ```
//!
//! Type a line to send it to `--to` (or to group `--group`); `/quit` leaves.

use clap::Parser;
use imclient::{Client, ClientConfig, Event, Kind};
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Parser)]
struct Args {
    /// Server address: tcp://, tls://, ws:// or wss://.
    #[arg(long, default_value = "tcp://127.0.0.1:19095")]
    server: String,
    #[arg(long)]
    uid: u32,
    /// From `imserver token --uid N` or `POST /auth/user_token`.
    #[arg(long)]
    token: String,
    /// Send typed lines to this user.
    #[arg(long, conflicts_with = "group")]
    to: Option<u32>,
    /// Send typed lines to this group.
    #[arg(long)]
    group: Option<u32>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let cfg = ClientConfig::new(args.server.parse()?, args.uid, args.token);
    let (client, mut events) = Client::connect(cfg).await?;
    println!("connected as {}", client.uid());

    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            match ev {
                Event::Message(m) => {
                    let from = m.sender().map_or("?".into(), |u| u.to_string());
                    match m.kind {
                        Kind::Direct => println!("[{from}] {}", m.text()),
                        Kind::Group { gid } | Kind::Part { gid, .. } => {
                            println!("[group {gid}] [{from}] {}", m.text())
                        }
                    }
                }
                Event::Connected { reconnect: true } => println!("(reconnected)"),
                Event::Disconnected { reason } => {
                    println!("(disconnected: {reason}; reconnecting)")
                }
                Event::LoggedOut => {
                    println!("(logged out: this user logged in elsewhere)");
                    std::process::exit(0);
                }
                Event::Stopped(why) => {
                    println!("(stopped: {why:?})");
                    std::process::exit(0);
                }
                Event::Connected { .. } => {}
            }
        }
    });

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if line == "/quit" {
            break;
        }
        let sent = match (args.to, args.group) {
            (_, Some(g)) => client.send_group(g, line.as_bytes()).await,
            (Some(to), None) => client.send(to, line.as_bytes()).await,
            (None, None) => {
                println!("(start with --to UID or --group GID to send)");
                continue;
            }
        };
        if let Err(e) = sent {
            println!("(not sent: {e})");
        }
    }
    client.close().await;
    Ok(())
}
