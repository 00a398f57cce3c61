#!/usr/bin/env python3
"""Latency at low load (issue 16, goal 2), every target in one sitting, rounds interleaved.

Two loads, each run against the echo baseline, mosquitto (`set_tcp_nodelay true`) and this
server (and, with BASE=<binary>, an earlier build of it):
  rtt       one pair, one message in flight per direction (`p2p --pairs 1 --window 1`):
            the unloaded round trip through the server
  rate-10k  50 pairs at 100 msg/s each (`p2p --pairs 50 --rate 100 --window 32`), latency
            from each message's scheduled send time, and the server CPU per delivery
On a machine with more than one core, the current build also runs with one shard (both loads),
which separates what the shard crossings cost from the rest of a delivery.

For every run: p50 / p99 of send → received, the server's CPU (user + system from /proc)
per delivery and in cores. Medians of ROUNDS rounds, every run listed.

  benches/e2e/latency.py                      # ROUNDS=3 DURATION=8s
  BASE=/tmp/imserver-before ROUNDS=5 benches/e2e/latency.py
  ONLY=rtt benches/e2e/latency.py             # one load

Writes benches/LATENCY.md (or $LATENCY_MD). Every process listens on 127.0.0.1 private ports
and is stopped at the end; every loadgen run is bounded by --duration and --drain-timeout.
"""
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import REL, ROOT, cpu_seconds, start_echo, start_imserver, start_mosquitto  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "3"))
DURATION = os.environ.get("DURATION", "8s")
BASE = os.environ.get("BASE")
LOADS = {
    "rtt": ["p2p", "--pairs", "1", "--window", "1"],
    "rate-10k": ["p2p", "--pairs", "50", "--rate", "100", "--window", "32"],
}
SHARDS = os.cpu_count() or 1  # this server's shards: one per core, set explicitly below


def uid_base(pairs, how):
    """A loadgen uid base placing the pairs on the shards: same, cross or mixed (uid_base.py).
    A random base would land one pair on one shard or on two by chance, and with two shards
    the round trip differs by a shard crossing (an eventfd wake-up of the other thread)."""
    out = subprocess.run([os.path.join(os.path.dirname(__file__), "uid_base.py"), str(pairs), how],
                         capture_output=True, text=True, check=True, env=dict(os.environ, SHARDS=str(SHARDS)))
    return out.stdout.strip()
ONLY = [x for x in os.environ.get("ONLY", "").split(",") if x] or list(LOADS)


def run(pid, target_args, load):
    c0, t0 = cpu_seconds(pid), time.time()
    out = subprocess.run([f"{REL}/loadgen", "--duration", DURATION, "--drain-timeout", "15s", "--size", "64",
                          "--json", "--quiet", *target_args, *LOADS[load]],
                         capture_output=True, text=True, timeout=120)
    c1, t1 = cpu_seconds(pid), time.time()
    if out.returncode != 0:
        raise SystemExit(f"loadgen failed: {out.stderr[-400:]}")
    r = json.loads(out.stdout)
    delivered = max(1.0, r["throughput"] * r["elapsed_s"])
    return {"tput": r["throughput"], "p50": r["latency_us"]["p50"], "p99": r["latency_us"]["p99"],
            "cpu_us": (c1 - c0) * 1e6 / delivered, "cores": (c1 - c0) / (t1 - t0),
            "pacing_p50": (r.get("pacing_error_us") or {}).get("p50"), "lost": r["lost"]}


def main():
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "imserver", "-p", "loadgen"], cwd=ROOT, check=True)
    if not shutil.which("mosquitto"):
        raise SystemExit("mosquitto is not installed (benches/e2e/run installs it)")
    work = tempfile.mkdtemp(prefix="im-latency.")
    procs, targets = [], []
    try:
        echo = start_echo(29899)
        procs.append(echo)
        targets.append(("echo baseline", echo.pid, ["--target", "echo", "--port", "29899"], list(LOADS)))
        mq = start_mosquitto(work, 29883)
        procs.append(mq)
        targets.append(("mosquitto", mq.pid, ["--target", "mqtt", "--port", "29883"], list(LOADS)))
        builds = ([("this server, base", BASE)] if BASE else []) + [("this server", None)]
        for i, (name, binary) in enumerate(builds):
            port = 29795 + 10 * i
            p = start_imserver(os.path.join(work, f"data{i}"), port, port + 1, port + 2, binary=binary,
                               env={"IMSERVER_RUNTIME__SHARDS": str(SHARDS)})
            procs.append(p)
            im = ["--target", "im", "--port", str(port), "--admin-url", f"http://127.0.0.1:{port + 2}"]
            targets.append((name, p.pid, im + ["--uid-base", uid_base(50, "mixed")], ["rate-10k"]))
            if SHARDS > 1:
                for where, same in (("pair on one shard", True), ("pair across shards", False)):
                    targets.append((f"{name}, {where}", p.pid, im + ["--uid-base", uid_base(1, "same" if same else "cross")], ["rtt"]))
            else:
                targets[-1][3].append("rtt")
        if SHARDS > 1:
            # The same build on one shard: at a fixed rate, what the shard crossings cost
            # (wake-ups of the other shard's thread) against the rest of a delivery.
            p = start_imserver(os.path.join(work, "data-one"), 29835, 29836, 29837,
                               env={"IMSERVER_RUNTIME__SHARDS": "1"})
            procs.append(p)
            targets.append(("this server, one shard", p.pid,
                            ["--target", "im", "--port", "29835", "--admin-url", "http://127.0.0.1:29837",
                             "--uid-base", uid_base(50, "mixed")], list(LOADS)))
        rows = {}
        for rnd in range(ROUNDS):
            for load in ONLY:
                for name, pid, args, loads in targets:
                    if load not in loads:
                        continue
                    r = run(pid, args, load)
                    rows.setdefault((load, name), []).append(r)
                    print(f"round {rnd + 1} {load:9} {name:34} {r['tput']:>9.0f}/s p50 {r['p50']:>6} "
                          f"p99 {r['p99']:>6} µs  {r['cpu_us']:.1f} µs CPU  {r['cores']:.2f} cores", flush=True)
        write(rows, targets)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


def write(rows, targets):
    med = statistics.median
    out = [f"# Latency at low load\n",
           f"Written by `benches/e2e/latency.py` on {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC: {ROUNDS} "
           f"interleaved rounds of {DURATION} per load and target on this {os.cpu_count()}-core machine "
           "(loadgen and the targets share it). Medians; every run's p50 listed. mosquitto runs with "
           "`set_tcp_nodelay true`. Latency is send → received at the other client; at a fixed rate it is "
           "measured from each message's scheduled send time. CPU is the target's user + system time.\n"]
    titles = {"rtt": "Unloaded round trip: one pair, one message in flight (`p2p --pairs 1 --window 1`)",
              "rate-10k": "Fixed 10,000 msg/s: 50 pairs × 100 msg/s (`p2p --pairs 50 --rate 100 --window 32`)"}
    for load in ONLY:
        out.append(f"\n## {titles[load]}\n")
        out.append("| target | deliveries/s | p50 µs | p50 vs echo | p99 µs | server cores | server CPU µs / delivery "
                   "| pacing error p50 µs | lost | p50 of each run |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        echo_p50 = med([r["p50"] for r in rows[(load, "echo baseline")]])
        for name, _, _, loads in targets:
            if load not in loads:
                continue
            rs = rows[(load, name)]
            pace = [r["pacing_p50"] for r in rs if r["pacing_p50"] is not None]
            each = ", ".join(f"{r['p50']:,}" for r in rs)
            out.append(f"| {name} | {med([r['tput'] for r in rs]):,.0f} | {med([r['p50'] for r in rs]):,.0f} | "
                       f"{med([r['p50'] for r in rs]) / echo_p50:.2f}x | {med([r['p99'] for r in rs]):,.0f} | "
                       f"{med([r['cores'] for r in rs]):.2f} | {med([r['cpu_us'] for r in rs]):.1f} | "
                       f"{(f'{med(pace):,.0f}' if pace else '—')} | {sum(r['lost'] for r in rs)} | "
                       f"{each} |")
    path = os.environ.get("LATENCY_MD", os.path.join(ROOT, "benches/LATENCY.md"))
    open(path, "w").write("\n".join(out) + "\n")
    print(open(path).read())


if __name__ == "__main__":
    main()
