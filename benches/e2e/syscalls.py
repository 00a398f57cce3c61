#!/usr/bin/env python3
"""System calls and context switches per login and per delivery (issue 16, goals 2 and 4).

Counts the server's system calls with `perf stat` (syscall tracepoints) over a loadgen run and
divides by what loadgen counted in the same run: per login (`connect --concurrency 16`) and per
delivery of the unloaded round trip (`p2p --pairs 1 --window 1`) with the pair on one shard and
across shards (uid bases from uid_base.py), and per delivery flat out (50 pairs, window 32),
where the kernel's sock_send_length / sock_recv_length tracepoints count sends and receives
made through io_uring too. Counts, not timings: they repeat from run to run on
a noisy machine, where CPU time does not.

  benches/e2e/syscalls.py                    # this checkout's release build
  BIN=/tmp/imserver-old benches/e2e/syscalls.py

Needs perf (Debian: linux-perf) and the rights to trace the server (root, or
kernel.perf_event_paranoid <= 1). Writes benches/SYSCALLS.md (or $SYSCALLS_MD).
"""
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from harness import REL, ROOT, start_imserver  # noqa: E402

EVENTS = ["raw_syscalls:sys_enter", "syscalls:sys_enter_io_uring_enter", "syscalls:sys_enter_recvfrom",
          "syscalls:sys_enter_sendto", "syscalls:sys_enter_write", "syscalls:sys_enter_setsockopt",
          "syscalls:sys_enter_ioctl", "syscalls:sys_enter_shutdown", "context-switches",
          # Sends and receives whatever their path (io_uring operations included): how well
          # writes are coalesced flat out.
          "sock:sock_send_length", "sock:sock_recv_length"]
UB = os.path.join(os.path.dirname(__file__), "uid_base.py")


def uid_base(pairs, how):
    return subprocess.run([UB, str(pairs), how], capture_output=True, text=True, check=True).stdout.strip()


LOADS = [
    ("per login (`connect --concurrency 16`)", ["connect", "--concurrency", "16"], "connects_per_s"),
    ("per delivery, round trip, pair on one shard", ["p2p", "--pairs", "1", "--window", "1", "--uid-base", uid_base(1, "same")], None),
    ("per delivery, round trip, pair across shards", ["p2p", "--pairs", "1", "--window", "1", "--uid-base", uid_base(1, "cross")], None),
    ("per delivery, 1:1 flat out (50 pairs, window 32)", ["p2p", "--pairs", "50", "--window", "32", "--size", "64", "--uid-base", uid_base(50, "mixed")], None),
]


def count(pid, port, load, key, work):
    out_file = os.path.join(work, "perf.csv")
    perf = subprocess.Popen(["perf", "stat", "-x", ",", "-e", ",".join(EVENTS), "-p", str(pid), "-o", out_file],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lg = subprocess.run([f"{REL}/loadgen", "--port", str(port), "--admin-url", f"http://127.0.0.1:{port + 2}",
                         "--duration", "5s", "--drain-timeout", "15s", "--json", "--quiet", *load],
                        capture_output=True, text=True, timeout=120)
    perf.send_signal(2)
    perf.wait(timeout=10)
    r = json.loads(lg.stdout)
    n = r["extra"][key] * r["elapsed_s"] if key else r["delivered"]
    counts = {}
    for line in open(out_file):
        f = line.strip().split(",")
        if len(f) > 2 and f[0].isdigit():
            counts[f[2]] = int(f[0]) / max(n, 1)
    return n, counts


def main():
    if not shutil.which("perf"):
        raise SystemExit("perf is not installed (Debian: linux-perf)")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "imserver", "-p", "loadgen"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="im-syscalls.")
    port = 29760
    server = start_imserver(os.path.join(work, "data"), port, port + 1, port + 2, binary=os.environ.get("BIN"),
                            env={"IMSERVER_RUNTIME__SHARDS": str(os.cpu_count() or 1)})
    rows = []
    try:
        for title, load, key in LOADS:
            n, c = count(server.pid, port, load, key, work)
            rows.append((title, n, c))
            print(f"{title}: {n:,.0f} counted, {c.get('raw_syscalls:sys_enter', 0):.2f} system calls each", flush=True)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
    out = ["# System calls per login and per delivery\n",
           f"Written by `benches/e2e/syscalls.py` on {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC "
           f"({os.environ.get('BIN') or 'this checkout'}): `perf stat` of the server over a 5 s loadgen run, divided "
           "by the logins or deliveries loadgen counted in it. Counts, so they repeat on a noisy machine.\n",
           "| | counted | " + " | ".join(e.split(":")[-1].replace("sys_enter_", "") for e in EVENTS) + " |",
           "|---|---:|" + "---:|" * len(EVENTS)]
    for title, n, c in rows:
        out.append(f"| {title} | {n:,.0f} | " + " | ".join(f"{c.get(e, 0):.3f}" for e in EVENTS) + " |")
    path = os.environ.get("SYSCALLS_MD", os.path.join(ROOT, "benches/SYSCALLS.md"))
    open(path, "w").write("\n".join(out) + "\n")
    print(open(path).read())


if __name__ == "__main__":
    main()
