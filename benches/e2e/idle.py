#!/usr/bin/env python3
"""Goal 3 of the performance work: what an idle authenticated connection costs. For each
target in one sitting: N connections log in (`loadgen idle`) and stay idle (answering
heartbeats); the server's process memory (RSS) and the machine's kernel memory (slab and
TCP socket buffers, from /proc/meminfo and /proc/net/sockstat) are read before the first
connection and once all are up, and the server's CPU is measured over the idle hold after
the logins. Kernel memory counts both ends of every loopback connection (loadgen's too).

Targets: this server over TCP and over WebSocket (defaults: 2 shards, embedded store),
mosquitto configured as its best users would (`set_tcp_nodelay true`; MQTT clients ping
it, so its CPU over the hold includes answering them), and the echo server as the floor
(a monoio task and a buffer per connection, no session). Writes benches/IDLE.md.

    benches/e2e/idle.py            # CONNS=15000 HOLD=30; about 3 minutes
    BASE=/tmp/imserver-old benches/e2e/idle.py   # adds an older build of this server (TCP)

`ulimit -n` must allow CONNS descriptors per process (loadgen holds all of them): the script
raises its soft limit to the hard limit and lowers CONNS to fit.
"""
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from harness import REL, ROOT, cpu_seconds, rss_bytes, start_echo, start_imserver, start_mosquitto

CONNS = int(os.environ.get("CONNS", "15000"))
HOLD = int(os.environ.get("HOLD", "30"))
PAGE = os.sysconf("SC_PAGE_SIZE")


def kernel():
    """Slab (all caches: sockets, dentries of socket inodes, epoll items) plus TCP buffers."""
    slab = 0
    for line in open("/proc/meminfo"):
        if line.startswith("Slab:"):
            slab = int(line.split()[1]) * 1024
    tcp = 0
    for line in open("/proc/net/sockstat"):
        if line.startswith("TCP:"):
            f = line.split()
            tcp = int(f[f.index("mem") + 1]) * PAGE
    return slab, tcp


def start(target, work):
    if target == "echo":
        return start_echo(29595), ["--target", "echo", "--port", "29595"]
    if target == "mosquitto":
        return start_mosquitto(work, 29883), ["--target", "mqtt", "--port", "29883"]
    transport = "ws" if target == "imserver-ws" else "tcp"
    binary = os.environ["BASE"] if target == "base-tcp" else None
    p = start_imserver(work, 29595, 29596, 29500, binary=binary)
    port = "29596" if transport == "ws" else "29595"
    return p, ["--transport", transport, "--port", port, "--admin-url", "http://127.0.0.1:29500"]


def measure(target, conns):
    work = tempfile.mkdtemp(prefix="idle-")
    srv, args = start(target, work)
    try:
        time.sleep(1)
        rss0, (slab0, tcp0) = rss_bytes(srv.pid), kernel()
        lg = subprocess.Popen([f"{REL}/loadgen", *args, "--json", "--quiet", "--duration", f"{HOLD + 10}s",
                               "idle", "--conns", str(conns), "--server-pid", str(srv.pid)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Logins take a few seconds; then let the server settle and measure the hold.
        time.sleep(8)
        rss1, (slab1, tcp1) = rss_bytes(srv.pid), kernel()
        c0, t0 = cpu_seconds(srv.pid), time.time()
        time.sleep(HOLD - 8 if HOLD > 16 else HOLD / 2)
        cores = (cpu_seconds(srv.pid) - c0) / (time.time() - t0)
        out, err = lg.communicate(timeout=HOLD + 120)
        if lg.returncode != 0:
            sys.exit(f"loadgen failed on {target} ({lg.returncode}): {out[-2000:]} {err[-2000:]}")
        r = json.loads(out)
        alive = int(r.get("extra", {}).get("alive_at_end", conns))
    finally:
        srv.terminate()
        try:
            srv.wait(timeout=30)
        except subprocess.TimeoutExpired:
            srv.kill()
        shutil.rmtree(work, ignore_errors=True)
    row = {"target": target, "conns": conns, "alive": alive,
           "rss_per_conn": (rss1 - rss0) / conns, "rss_before_mb": rss0 / 2**20, "rss_after_mb": rss1 / 2**20,
           "slab_per_conn": (slab1 - slab0) / conns, "tcp_per_conn": (tcp1 - tcp0) / conns, "cores": cores}
    print(json.dumps(row), flush=True)
    time.sleep(2)  # sockets in TIME_WAIT and freed slabs settle before the next target
    return row


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    conns = min(CONNS, hard - 500)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "imserver", "-p", "loadgen", "--bins"],
                   cwd=ROOT, check=True)
    if not shutil.which("mosquitto"):
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto",
                       shell=True, check=True)
    targets = ["imserver-tcp", "imserver-ws", "mosquitto", "echo"]
    if os.environ.get("BASE"):
        targets.insert(0, "base-tcp")
    rows = [measure(t, conns) for t in targets]
    mq = next(r for r in rows if r["target"] == "mosquitto")
    out = [
        "# Idle connections: memory and CPU",
        "",
        f"Written by `benches/e2e/idle.py` on {time.strftime('%Y-%m-%d')} ({os.cpu_count()} cores, shared). "
        f"Per target, in one sitting: {conns:,} connections log in (`loadgen idle`, CONNECT with a token for "
        "this server, MQTT CONNECT for mosquitto, a first frame for the echo server) and stay idle, answering "
        "heartbeats. Process memory is the server's RSS after the logins minus before; kernel memory is the "
        "machine's slab and TCP buffer memory after minus before, so it counts **both ends** of every loopback "
        f"connection (loadgen's and the server's). Server CPU over {HOLD - 8 if HOLD > 16 else HOLD / 2:.0f} s "
        "of the idle hold, after the logins."
        + (" `base-tcp` is an earlier build of this server (`BASE` "
           f"{os.path.basename(os.environ['BASE'])}), same settings." if os.environ.get("BASE") else ""),
        "",
        "| target | connections alive | process RSS / conn | vs mosquitto | kernel slab / conn (both ends) | TCP buffers / conn | server cores while idle |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        out.append(f"| {r['target']} | {r['alive']:,} | {r['rss_per_conn']:,.0f} B | "
                   f"{r['rss_per_conn'] / mq['rss_per_conn']:.2f}× | {r['slab_per_conn']:,.0f} B | "
                   f"{r['tcp_per_conn']:,.0f} B | {r['cores']:.3f} |")
    out += ["", "Goal (issue: performance, goal 3): this server's process memory per idle authenticated "
            "connection ≤ 1 KB (mosquitto's, measured above in the same run) and no CPU spent on idle sessions.",
            "", "Raw rows:", "", "```", *[json.dumps(r) for r in rows], "```", ""]
    open(os.path.join(ROOT, "benches/IDLE.md"), "w").write("\n".join(out))
    print("\n".join(out))


if __name__ == "__main__":
    main()
