#!/usr/bin/env python3
"""Logins (issue 16, goal 4), every target in one sitting, rounds interleaved: a connect storm
(`loadgen connect --concurrency 16`: open, log in, close, again) against the echo baseline
(accept + one CONNECT-sized frame back + close), mosquitto (`set_tcp_nodelay true`, anonymous
MQTT CONNECT) and this server (CONNECT with a token, CONNECT_ACK), and with BASE=<binary> an
earlier build of it. For every run: logins/s, the target's cores (user + system from /proc),
logins per server core, and the server CPU per login; the table gives medians and every run.

  benches/e2e/logins.py                       # ROUNDS=3 DURATION=5s
  BASE=/tmp/imserver-before ROUNDS=5 benches/e2e/logins.py

Writes benches/LOGINS.md (or $LOGINS_MD). Every process listens on 127.0.0.1 private ports
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
DURATION = os.environ.get("DURATION", "5s")
BASE = os.environ.get("BASE")
LOAD = ["connect", "--concurrency", "16"]


def run(pid, target_args):
    c0, t0 = cpu_seconds(pid), time.time()
    out = subprocess.run([f"{REL}/loadgen", "--duration", DURATION, "--drain-timeout", "5s", "--json", "--quiet",
                          *target_args, *LOAD], capture_output=True, text=True, timeout=120)
    c1, t1 = cpu_seconds(pid), time.time()
    if out.returncode != 0:
        raise SystemExit(f"loadgen failed: {out.stderr[-400:]}")
    r = json.loads(out.stdout)
    rate = r["connections"] / r["elapsed_s"]
    cores = (c1 - c0) / (t1 - t0)
    return {"rate": rate, "cores": cores, "per_core": rate / max(cores, 1e-9),
            "cpu_us": (c1 - c0) * 1e6 / max(1, r["connections"]), "errors": sum(r.get("errors", {}).values())}


def main():
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "imserver", "-p", "loadgen"], cwd=ROOT, check=True)
    if not shutil.which("mosquitto"):
        raise SystemExit("mosquitto is not installed (benches/e2e/run installs it)")
    work = tempfile.mkdtemp(prefix="im-logins.")
    procs, targets = [], []
    try:
        echo = start_echo(29898)
        procs.append(echo)
        targets.append(("echo baseline", echo.pid, ["--target", "echo", "--port", "29898"]))
        mq = start_mosquitto(work, 29882)
        procs.append(mq)
        targets.append(("mosquitto", mq.pid, ["--target", "mqtt", "--port", "29882"]))
        builds = ([("this server, base", BASE)] if BASE else []) + [("this server", None)]
        for i, (name, binary) in enumerate(builds):
            port = 29695 + 10 * i
            p = start_imserver(os.path.join(work, f"data{i}"), port, port + 1, port + 2, binary=binary)
            procs.append(p)
            targets.append((name, p.pid, ["--target", "im", "--port", str(port),
                                          "--admin-url", f"http://127.0.0.1:{port + 2}"]))
        rows = {}
        for rnd in range(ROUNDS):
            for name, pid, args in targets:
                r = run(pid, args)
                rows.setdefault(name, []).append(r)
                print(f"round {rnd + 1} {name:20} {r['rate']:>8.0f}/s {r['cores']:.2f} cores "
                      f"{r['per_core']:>8.0f} per core {r['cpu_us']:.1f} µs/login", flush=True)
        write(rows, [t[0] for t in targets])
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


def write(rows, names):
    med = statistics.median
    echo, mq = rows["echo baseline"], rows["mosquitto"]
    out = ["# Logins\n",
           f"Written by `benches/e2e/logins.py` on {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC: {ROUNDS} "
           f"interleaved rounds of {DURATION} per target of `loadgen {' '.join(LOAD)}` on this "
           f"{os.cpu_count()}-core machine (loadgen and the targets share it). The echo baseline is an accept, "
           "one CONNECT-sized frame written back, and a close; mosquitto takes an anonymous MQTT CONNECT "
           "(`set_tcp_nodelay true`); this server a CONNECT with a token. Ratios are per round against the "
           "echo server's and mosquitto's run of the same round, then the median. Server CPU is the "
           "target's user + system time.\n",
           "| target | logins/s | rate vs echo | server cores | logins per core | per core vs mosquitto "
           "| server CPU µs / login | errors | rate vs echo, each round | per core vs mosquitto, each round |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for name in names:
        rs = rows[name]
        vs_echo = [r["rate"] / e["rate"] for r, e in zip(rs, echo)]
        vs_mq = [r["per_core"] / m["per_core"] for r, m in zip(rs, mq)]
        out.append(f"| {name} | {med([r['rate'] for r in rs]):,.0f} | {med(vs_echo):.2f}x | "
                   f"{med([r['cores'] for r in rs]):.2f} | {med([r['per_core'] for r in rs]):,.0f} | "
                   f"{med(vs_mq):.2f}x | {med([r['cpu_us'] for r in rs]):.1f} | {sum(r['errors'] for r in rs)} | "
                   f"{', '.join(f'{x:.2f}' for x in vs_echo)} | {', '.join(f'{x:.2f}' for x in vs_mq)} |")
    path = os.environ.get("LOGINS_MD", os.path.join(ROOT, "benches/LOGINS.md"))
    open(path, "w").write("\n".join(out) + "\n")
    print(open(path).read())


if __name__ == "__main__":
    main()
