#!/usr/bin/env python3
"""io_uring against epoll, alternating in one sitting (issue: performance, goal 6). One
release server per run (2 shards, `--driver io-uring` or `--driver epoll`); `loadgen p2p`
over TCP, 10 s each: flat out (50 pairs, window 32) and one pair with window 1 (the round
trip of an unloaded server). ROUNDS rounds, drivers alternating within each. Reported per
run: deliveries/s, p50 / p99 latency, server cores. Writes benches/DRIVERS.md.

    benches/e2e/drivers.py        # ROUNDS=3; about 3 minutes
"""
import json
import os
import subprocess
import sys
import tempfile
import time

from harness import REL, ROOT, cpu_seconds, start_imserver

ROUNDS = int(os.environ.get("ROUNDS", "3"))
SCENARIOS = {
    "flat out, 50 pairs, window 32": ["--pairs", "50", "--window", "32"],
    "1 pair, window 1": ["--pairs", "1", "--window", "1"],
}


def once(driver, args, base):
    data = tempfile.mkdtemp(prefix="drivers-")
    srv = start_imserver(data, 29695, 29696, 29600, args=("--driver", driver))
    try:
        c0, t0 = cpu_seconds(srv.pid), time.time()
        p = subprocess.run([f"{REL}/loadgen", "--port", "29695", "--admin-url", "http://127.0.0.1:29600", "--json",
                            "--quiet", "--duration", "10s", "--uid-base", str(base), "p2p", *args],
                           capture_output=True, text=True, timeout=120)
        c1, t1 = cpu_seconds(srv.pid), time.time()
    finally:
        srv.terminate()
        srv.wait(timeout=30)
    if p.returncode != 0:
        sys.exit(f"loadgen failed: {p.stdout[-1500:]} {p.stderr[-1500:]}")
    r = json.loads(p.stdout)
    return r["throughput"], r["latency_us"]["p50"], r["latency_us"]["p99"], (c1 - c0) / (t1 - t0)


def main():
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "imserver", "-p", "loadgen"], cwd=ROOT, check=True)
    res = {(s, d): [] for s in SCENARIOS for d in ("io-uring", "epoll")}
    base = 400_000
    for r in range(ROUNDS):
        for s, args in SCENARIOS.items():
            for d in (("io-uring", "epoll") if r % 2 == 0 else ("epoll", "io-uring")):
                base += 1000
                res[(s, d)].append(once(d, args, base))
                x = res[(s, d)][-1]
                print(f"round {r + 1} {s} {d}: {x[0]:,.0f}/s p50 {x[1]} us p99 {x[2]} us cores {x[3]:.2f}", flush=True)
    out = ["# io_uring and epoll, side by side", "",
           f"Written by `benches/e2e/drivers.py` on {time.strftime('%Y-%m-%d')} ({os.cpu_count()} cores, shared and "
           "noisy; loadgen shares them). A fresh release server per run (2 shards, embedded store); `loadgen p2p` "
           f"over TCP for 10 s; {ROUNDS} rounds, the drivers alternating. Each cell: one value per round.", "",
           "| scenario | driver | deliveries/s | median vs io_uring | p50 µs | p99 µs | server cores |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    med = lambda v: sorted(v)[len(v) // 2]
    for s in SCENARIOS:
        ref = med([x[0] for x in res[(s, "io-uring")]])
        for d in ("io-uring", "epoll"):
            v = res[(s, d)]
            out.append(f"| {s} | {d} | {' / '.join(f'{x[0]:,.0f}' for x in v)} | {med([x[0] for x in v]) / ref:.2f}× | "
                       f"{' / '.join(str(x[1]) for x in v)} | {' / '.join(str(x[2]) for x in v)} | "
                       f"{' / '.join(f'{x[3]:.2f}' for x in v)} |")
    out.append("")
    open(os.path.join(ROOT, "benches/DRIVERS.md"), "w").write("\n".join(out))
    print("\n".join(out))


if __name__ == "__main__":
    main()
