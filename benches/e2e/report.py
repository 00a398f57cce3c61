#!/usr/bin/env python3
"""Turns the loadgen JSON of one benchmark run into benches/RESULTS.md and the plots.

Usage: report.py RESULTS_DIR BENCHES_DIR DURATION VERSIONS ELAPSED_S [CRITERION_DIR]
Every ratio is target ÷ this server, measured in the same run on the same machine.
"""
import datetime
import json
import os
import platform
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

res_dir, benches, duration, versions, elapsed = sys.argv[1:6]
crit_dir = sys.argv[6] if len(sys.argv) > 6 else None
R = {}
C = {}  # run name → {"cpu_s", "wall_s"}: the target's CPU time over the run
for f in sorted(os.listdir(res_dir)):
    if f.endswith(".cpu"):
        try:
            C[f[:-4]] = json.load(open(os.path.join(res_dir, f)))
        except ValueError:
            pass
    if f.endswith(".json"):
        try:
            R[f[:-5]] = json.load(open(os.path.join(res_dir, f)))
        except ValueError:
            pass  # a failed run left no JSON: reported as missing

TARGETS = [("im", "this server"), ("mosquitto", "mosquitto"), ("nats", "nats-server (JetStream on disk)"),
           ("natsmem", "nats-server (JetStream on tmpfs)"), ("echo", "echo baseline")]
GROUP_TARGETS = TARGETS[:3]
SIZES = [10, 100, 500]


def cpu():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ratio(x, base):
    return f"{x / base:.2f}x" if base else "—"


def checks(r):
    return f"{r['lost']}/{r['duplicated']}/{r['reordered']}"


def cpu_cells(name, r):
    """The target's cores over the run and its CPU µs per delivery."""
    c = C.get(name)
    if not c or not c["wall_s"] or not r.get("delivered"):
        return "— | —"
    return f"{c['cpu_s'] / c['wall_s']:.2f} | {c['cpu_s'] * 1e6 / r['delivered']:.2f}"


def row_msgs(label, r, base, name):
    l = r["latency_us"]
    b = base["latency_us"] if base else None
    return (
        f"| {label} | {r['throughput']:,.0f} | {ratio(r['throughput'], base['throughput']) if base else '—'} "
        f"| {cpu_cells(name, r)} "
        f"| {l['p50']:,} | {l['p99']:,} | {ratio(l['p99'], b['p99']) if b else '—'} | {l['p999']:,} | {l['max']:,} "
        f"| {checks(r)} |"
    )


out = []
w = out.append
w("# Benchmark results")
w("")
w(f"Written by `benches/e2e/run` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
  f"whole run {elapsed} s. Machine: {os.cpu_count()} cores ({cpu()}), Linux {platform.release()}. "
  f"Targets: this server (release build, embedded defaults), {versions}, and the monoio echo "
  f"server (`loadgen/src/bin/echo_server.rs`), the ceiling of what loopback moves with these frames. "
  f"mosquitto runs with `set_tcp_nodelay true` and no in-flight cap. nats-server runs twice for 1:1: "
  f"its MQTT gateway cannot run without JetStream (QoS 1 state lives there), so once with JetStream's "
  f"file store on disk and once with it on tmpfs (no disk, like this server in these runs).")
w("")
w(f"Same loadgen settings for every target: {duration} of sending per run, 64-byte payloads, "
  "QoS 1 for MQTT (a topic per user, a topic per group), the IM protocol over TCP unless said. "
  "The load generator and the target share the machine's cores, as they do for every target. "
  "**Ratios are target ÷ this server** (throughput above 1.00x: faster than ours; p99 above "
  "1.00x: slower than ours). Checks are lost/duplicated/reordered messages, counted by the "
  "receivers from the sequence number in every message: they must be 0/0/0.")
w("")

for key, title, note in [
    ("p2p-flat", "1:1 messages, flat out", "50 pairs, both directions, at most 32 messages in flight per sender (unacked, or not yet received: a closed loop)."),
    ("p2p-rate", "1:1 messages at a fixed rate", "100 pairs, 100 msg/s per sender (20,000 msg/s offered): latency under moderate load, "
     "measured from each message's scheduled send time (so a target that falls behind cannot hide its queue). "
     "Senders run out of step, so the offered load is one even stream, paced by a timerfd per loadgen thread; "
     "the pacing error below is how late messages left, the same pacer for every target."),
]:
    w(f"## {title}")
    w("")
    w(note)
    w("")
    w("| target | deliveries/s | throughput ratio | server cores | server CPU µs / delivery | p50 µs | p99 µs | p99 ratio | p99.9 µs | max µs | lost/dup/reord |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = R.get(f"im-{key}")
    for t, label in TARGETS:
        r = R.get(f"{t}-{key}")
        w(row_msgs(label, r, base, f"{t}-{key}") if r else f"| {label} | missing (run failed) | | | | | | | | | |")
    w("")
    if key == "p2p-rate":
        cells = []
        for t, label in TARGETS:
            pe = (R.get(f"{t}-{key}") or {}).get("pacing_error_us") or {}
            if pe.get("count"):
                cells.append(f"{label} p50 {pe['p50']:,} / p99 {pe['p99']:,} µs")
        if cells:
            w("Pacing error: " + "; ".join(cells) + ".")
            w("")

w("## Unloaded round trip")
w("")
w("One pair, one message in flight per direction (`p2p --pairs 1 --window 1`): what a message costs "
  "when nothing else is going on. This server runs one shard per core; the pair's two users sit on "
  "one shard, or on two (each message then wakes the other shard's thread), pinned with `--uid-base`.")
w("")
w("| target | deliveries/s | server cores | server CPU µs / delivery | p50 µs | p50 vs echo | p99 µs | p99.9 µs | lost/dup/reord |")
w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
echo_rtt = R.get("echo-rtt")
for name, label in [("echo-rtt", "echo baseline"), ("mosquitto-rtt", "mosquitto"),
                    ("im-rtt", "this server, pair on one shard"), ("im-rtt-cross", "this server, pair across shards")]:
    r = R.get(name)
    if not r:
        w(f"| {label} | missing (run failed) | | | | | | | |")
        continue
    l = r["latency_us"]
    vs = ratio(l["p50"], echo_rtt["latency_us"]["p50"]) if echo_rtt else "—"
    w(f"| {label} | {r['throughput']:,.0f} | {cpu_cells(name, r)} | {l['p50']:,} | {vs} | {l['p99']:,} | {l['p999']:,} | {checks(r)} |")
w("")

w("## Group fan-out, flat out")
w("")
w("About 1,000 members per run (groups × members), one sender per group with at most 4 "
  "messages in flight (unacked, or not yet received by every member); fan-out latency is "
  "send → the last member received it.")
w("")
w("| target | members | deliveries/s | throughput ratio | server cores | server CPU µs / delivery | fan-out p50 µs | fan-out p99 µs | p99 ratio | delivery p99 µs | lost/dup/reord |")
w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for m in SIZES:
    base = R.get(f"im-group-{m}")
    for t, label in GROUP_TARGETS:
        r = R.get(f"{t}-group-{m}")
        if not r:
            w(f"| {label} | {m} | missing (run failed) | | | | | | | | |")
            continue
        f = r["fanout_latency_us"]
        w(f"| {label} | {m} | {r['throughput']:,.0f} | {ratio(r['throughput'], base['throughput']) if base else '—'} "
          f"| {cpu_cells(f'{t}-group-{m}', r)} | {f['p50']:,} | {f['p99']:,} | {ratio(f['p99'], base['fanout_latency_us']['p99']) if base else '—'} "
          f"| {r['latency_us']['p99']:,} | {checks(r)} |")
w("")

w("## Logins")
w("")
w("A connect + authenticate storm (`connect --concurrency 16` per loadgen thread): open, CONNECT "
  "with a token, CONNECT_ACK, close, again. mosquitto: MQTT CONNECT without authentication; the echo "
  "baseline: accept, one frame back, close. Logins per server core is the rate divided by the "
  "target's cores over the run.")
w("")
w("| target | logins/s | server cores | logins per server core | per core vs mosquitto | rate vs echo | server CPU µs / login | p50 µs | p99 µs | errors |")
w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def logins(name):
    r, c = R.get(name), C.get(name)
    if not r or not c or not c["wall_s"] or not c["cpu_s"]:
        return None
    rate = r["extra"].get("connects_per_s", 0)
    cores = c["cpu_s"] / c["wall_s"]
    return r, rate, cores, rate / cores


base_mq, base_echo = logins("mosquitto-connect"), logins("echo-connect")
for name, label in [("im-connect", "this server"), ("mosquitto-connect", "mosquitto"), ("echo-connect", "echo baseline")]:
    got = logins(name)
    if not got:
        w(f"| {label} | missing (run failed) | | | | | | | | |")
        continue
    r, rate, cores, per_core = got
    lat = r.get("connect_latency_us") or {}
    w(f"| {label} | {rate:,.0f} | {cores:.2f} | {per_core:,.0f} | {ratio(per_core, base_mq[3]) if base_mq else '—'} "
      f"| {ratio(rate, base_echo[1]) if base_echo else '—'} | {cores / rate * 1e6 if rate else 0:.1f} "
      f"| {lat.get('p50', 0):,} | {lat.get('p99', 0):,} | {sum(r['errors'].values())} |")
w("")

w("## This server only")
w("")
w("| run | figure |")
w("|---|---|")
base = R.get("im-p2p-flat")
for name, label in [("im-ws-p2p-flat", "1:1 flat out over WebSocket"), ("im-wss-p2p-flat", "1:1 flat out over WebSocket + TLS")]:
    r = R.get(name)
    if r:
        w(f"| {label} | {r['throughput']:,.0f} deliveries/s ({ratio(r['throughput'], base['throughput']) if base else '—'} of TCP), "
          f"p99 {r['latency_us']['p99']:,} µs, checks {checks(r)} |")
r = R.get("im-connect")
if r:
    c = r["connect_latency_us"]
    w(f"| connect + auth storm (16 connectors per thread) | {r['extra'].get('connects_per_s', 0):,.0f} logins/s, "
      f"p50 {c['p50']:,} µs, p99 {c['p99']:,} µs, errors {sum(r['errors'].values())} |")
r = R.get("im-idle")
if r:
    e = r["extra"]
    w(f"| 5,000 idle connections, 4 s after the last login | server {e.get('server_bytes_per_conn', 0):,.0f} "
      f"bytes per connection "
      f"(RSS {e.get('server_rss_before_mib', 0):.1f} → {e.get('server_rss_after_mib', 0):.1f} MiB), "
      f"{e.get('alive_at_end', 0):,.0f} alive at the end |")
r = R.get("im-offline")
if r:
    cpu = r["extra"].get("drain_server_cpu_s")
    per_core = f", {r['delivered'] / cpu:,.0f} per server CPU second" if cpu else ""
    w(f"| offline drain (200 users × 1,000 messages stored, then all connect) | {r['throughput']:,.0f} messages/s{per_core}, "
      f"{r['delivered']:,} delivered in {r['elapsed_s']:.2f} s, checks {checks(r)} |")
w("")

# One node and three (benches/e2e/cluster.py, run by the same script), folded in as a section.
try:
    lines = open(os.path.join(res_dir, "cluster.md")).read().splitlines()
    w("## Cluster: one node and three clustered nodes")
    for line in lines[1:]:
        w("#" + line if line.startswith("## ") else line)
except OSError:
    w("## Cluster")
    w("")
    w("Not run (`benches/e2e/cluster.py` failed or was not reached).")
    w("")

# perf profiles of this server (and of an earlier build when PROFILE_BASE was given).
def profile(name):
    try:
        return [l.rstrip() for l in open(os.path.join(res_dir, f"{name}.txt")) if l.strip()]
    except OSError:
        return None


def profile_table(lines):
    w("| share | where | symbol |")
    w("|---:|---|---|")
    for l in lines:
        parts = l.split(None, 2)
        if len(parts) == 3:
            # perf pads the symbol column and appends its IPC columns ("-  -"): keep the name.
            symbol = parts[2].replace("[.] ", "").split("   ")[0].strip()
            w(f"| {parts[0]} | {parts[1]} | `{symbol[:100]}` |")
    w("")


if profile("profile-flat") or profile("profile-rtt"):
    try:
        rev = open(os.path.join(res_dir, "profile-base.rev")).read().strip()
    except OSError:
        rev = None
    w("## Where the server's time goes (perf)")
    w("")
    w("`perf record -F 1999 -p <server>` for 5 s in the middle of an 8 s load (separate from the measured runs), "
      "then `perf report --no-children --sort dso,symbol`: the top entries, as shares of the server's samples. "
      "Flat out is `p2p --pairs 50 --window 32`; the round trip is one pair across shards. "
      + (f"\"Before\" is the build at `{rev}` (before issue 16's changes), profiled the same way in this run. " if rev else "")
      + "Each change and its A/B are in `benches/PROFILE.md`.")
    w("")
    for key, title in [("flat", "1:1 flat out"), ("rtt", "unloaded round trip, pair across shards")]:
        for pre, when in ([("profile-base-", "before"), ("profile-", "now")] if rev else [("profile-", "now")]):
            lines = profile(f"{pre}{key}")
            if lines:
                w(f"**{title}, {when}**")
                w("")
                profile_table(lines)

# Criterion micro-benchmarks, from target/criterion/<group>/<bench>/new/{estimates,benchmark}.json.
MICRO = [
    ("codec/encode_publish_64B", "encode a 64-byte PUBLISH with its length prefix", 1),
    ("codec/decode_64_framed_pushes", "decode 64 framed pushes from one buffer (per push)", 64),
    ("mailbox/hop_cross_thread_10k", "mailbox hop between two shard threads (per hop, 10,000 in a row)", 10_000),
    ("mailbox/hop_same_thread", "mailbox enqueue + dequeue on one thread (baseline for the hop)", 1),
    ("fanout_batch/100", "build a fan-out (frame + split by shard), 100 members (per member)", 100),
    ("fanout_batch/10000", "build a fan-out, 10,000 members (per member)", 10_000),
    ("envelope/push_frame_json_64B", "build a 1:1 push frame, JSON envelope around 64 bytes of text", 1),
    ("dedupe/admit_full_100_senders", "dedupe check of 100 senders with full tables, each admit evicting (per admit)", 100),
]
rows = []
for name, label, n in MICRO:
    f = os.path.join(crit_dir or "", *name.split("/"), "new", "estimates.json")
    try:
        est = json.load(open(f))
        mean = est["mean"]["point_estimate"]
        rows.append(f"| {label} | {mean:,.0f} ns | {mean / n:,.1f} ns |")
    except (OSError, ValueError, KeyError):
        rows.append(f"| {label} | not run | |")
w("## Micro-benchmarks (criterion)")
w("")
w("`cargo bench -p im-benches --bench codec --bench mailbox --bench fanout_batch --bench dedupe --bench envelope`, run by the "
  "same script (1 s warm-up, 3 s measurement each); mean time per iteration and per item.")
w("")
w("| what | per iteration | per item |")
w("|---|---:|---:|")
out.extend(rows)
w("")

# Plots.
pdir = os.path.join(benches, "plots")
os.makedirs(pdir, exist_ok=True)
fig, ax = plt.subplots(figsize=(7, 4.5))
for t, label in TARGETS:
    r = R.get(f"{t}-p2p-rate")
    if r and r["latency_cdf_us"]:
        xs = [v / 1000 for _, v in r["latency_cdf_us"]]
        ys = [q for q, _ in r["latency_cdf_us"]]
        ax.plot(xs, ys, label=label)
ax.set_xscale("log")
ax.set_xlabel("delivery latency (ms, log)")
ax.set_ylabel("fraction of messages")
ax.set_title("1:1 latency CDF at 20,000 msg/s offered")
ax.grid(True, which="both", alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(os.path.join(pdir, "latency_cdf.png"), dpi=110)

fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
for t, label in GROUP_TARGETS:
    pts = [(m, R.get(f"{t}-group-{m}")) for m in SIZES]
    pts = [(m, r) for m, r in pts if r]
    if pts:
        a1.plot([m for m, _ in pts], [r["throughput"] for _, r in pts], marker="o", label=label)
        a2.plot([m for m, _ in pts], [r["fanout_latency_us"]["p99"] / 1000 for _, r in pts], marker="o", label=label)
for a, yl in [(a1, "deliveries/s"), (a2, "fan-out p99 (ms)")]:
    a.set_xscale("log")
    a.set_xlabel("group size (members)")
    a.set_ylabel(yl)
    a.grid(True, which="both", alpha=0.3)
    a.legend()
a1.set_title("group throughput vs group size")
a2.set_title("fan-out p99 vs group size")
a2.set_yscale("log")
fig.tight_layout()
fig.savefig(os.path.join(pdir, "group.png"), dpi=110)

w("## Plots")
w("")
w("![latency CDF](plots/latency_cdf.png)")
w("")
w("![group throughput and p99 against group size](plots/group.png)")
w("")
w("Raw loadgen output of every run: `benches/results/*.json`.")
w("")
w("## Changes to the core, A/B")
w("")
w("A change to the shard core is checked against the build before it with `benches/e2e/ab BASE_BINARY` "
  "(both builds and the echo baseline interleaved in one run, 1:1 and group fan-out flat out, server CPU per "
  "delivery): latest in [`AB.md`](AB.md).")
open(os.path.join(benches, "RESULTS.md"), "w").write("\n".join(out) + "\n")
print("wrote", os.path.join(benches, "RESULTS.md"))
