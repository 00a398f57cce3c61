#!/usr/bin/env python3
"""One node against three (issue: cluster), alternating in one sitting. Both sides use the
same shared stores (Redis offline store and groups, one `redis-server` started here with
no persistence): one node with `[cluster]` off, or three nodes (`n1`..`n3`, 1 shard each,
so the three together have as many shard threads as the single node's 2 plus one) with it
on. Three loads over TCP: 1:1 flat out (50 pairs, window 32), 1:1 at a fixed 10,000 msg/s
(50 pairs, 100 msg/s per sender) and group fan-out flat out (10 groups of 30, window 4).
With three nodes users are spread two ways: `--targets` (each user to a node in turn, so
about two thirds of the clients land on a node that is not their home and are relayed
there) and `--targets --connect-home` (each user asks the token endpoint for its home and
connects there, the login flow a cluster-aware client follows). Either way about two
thirds of the messages cross nodes; loadgen (which asks every user's home) splits their
latency into same-node and cross-node.

On a 2-core machine three nodes cannot add capacity: what this measures is the cost of
crossing nodes — server CPU per delivery (all server processes plus redis-server) and Redis
commands per delivery. Writes benches/CLUSTER.md (or the file named by CLUSTER_MD, which
`benches/e2e/run` folds into RESULTS.md).

    benches/e2e/cluster.py                    # ROUNDS=2 DURATION=8s; about 4 minutes
    ROUNDS=1 DURATION=5s benches/e2e/cluster.py
    ONLY="10,000" SETUPS="3 nodes, connect home" BIN=/tmp/imserver-before CLUSTER_MD=/tmp/a.md \
        benches/e2e/cluster.py                # one load, one setup, another build (A/B)
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

from harness import REL, ROOT, cpu_seconds, start_imserver

ROUNDS = int(os.environ.get("ROUNDS", "2"))
DURATION = os.environ.get("DURATION", "8s")
OUT = os.environ.get("CLUSTER_MD", os.path.join(ROOT, "benches/CLUSTER.md"))
REDIS_PORT = 29379
LOADS = {
    "1:1 flat out": ["p2p", "--pairs", "50", "--window", "32"],
    "1:1 at 10,000 msg/s": ["p2p", "--pairs", "50", "--rate", "100", "--window", "32"],
    "group fan-out flat out": ["group", "--groups", "10", "--members", "30", "--rate", "0", "--window", "4"],
}
SETUPS = ("1 node", "3 nodes, relayed", "3 nodes, connect home")
# Narrowing for A/B runs: loads whose name contains ONLY, the SETUPS listed (separated by ";"), another binary.
LOADS = {k: v for k, v in LOADS.items() if os.environ.get("ONLY", "") in k}
SETUPS = tuple(s for s in SETUPS if s in os.environ.get("SETUPS", ";".join(SETUPS)).split(";"))
BIN = os.environ.get("BIN")


def redis_cli(*args):
    return subprocess.run(["redis-cli", "-p", str(REDIS_PORT), *args], capture_output=True, text=True).stdout


def redis_commands():
    for line in redis_cli("INFO", "stats").splitlines():
        if line.startswith("total_commands_processed:"):
            return int(line.split(":")[1])
    return 0


def metric(port, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


def once(setup, load, base, redis_pid):
    nodes = 1 if setup == "1 node" else 3
    env = {"IMSERVER_STORAGE__BACKEND": "redis", "IMSERVER_GROUPS__BACKEND": "redis",
           "IMSERVER_REDIS__PORT": str(REDIS_PORT)}
    procs, ports = [], []
    dirs = []
    for i in range(nodes):
        tcp, ws, ctl = 29795 + 10 * i, 29796 + 10 * i, 29700 + i
        e = dict(env)
        if nodes > 1:
            e.update({"IMSERVER_CLUSTER__ENABLED": "true", "IMSERVER_CLUSTER__NODE_ID": f"n{i + 1}"})
        d = tempfile.mkdtemp(prefix="cluster-")
        dirs.append(d)
        procs.append(start_imserver(d, tcp, ws, ctl, env=e, args=("--shards", "1" if nodes > 1 else "2"),
                                    binary=BIN))
        ports.append((tcp, ctl))
    try:
        if nodes > 1:
            # Every node sees the others before the load starts.
            deadline = time.time() + 15
            while any(metric(c, "im_cluster_live_nodes") != nodes for _, c in ports):
                if time.time() > deadline:
                    sys.exit("the nodes never saw each other")
                time.sleep(0.1)
        target = (["--targets", ",".join(f"127.0.0.1:{t}" for t, _ in ports)] if nodes > 1
                  else ["--port", str(ports[0][0])])
        if setup.endswith("home"):
            target.append("--connect-home")
        cpu0 = sum(cpu_seconds(p.pid) for p in procs) + cpu_seconds(redis_pid)
        cmd0, t0 = redis_commands(), time.time()
        p = subprocess.run([f"{REL}/loadgen", *target, "--admin-url", f"http://127.0.0.1:{ports[0][1]}", "--json",
                            "--quiet", "--duration", DURATION, "--uid-base", str(base), *LOADS[load]],
                           capture_output=True, text=True, timeout=120)
        t1 = time.time()
        cpu1 = sum(cpu_seconds(p_.pid) for p_ in procs) + cpu_seconds(redis_pid)
        cmds = redis_commands() - cmd0
        forwarded = sum(metric(c, 'im_messages_total{event="forwarded"}') for _, c in ports)
        relayed = sum(metric(c, "im_relayed_logins_total") for _, c in ports)
    finally:
        for p_ in procs:
            p_.terminate()
        for p_ in procs:
            p_.wait(timeout=30)
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
    if p.returncode != 0:
        sys.exit(f"loadgen failed: {p.stdout[-1500:]} {p.stderr[-1500:]}")
    r = json.loads(p.stdout)
    delivered = r["throughput"] * (t1 - t0)
    split = {}
    for k in ("same_node", "cross_node"):
        lat = r.get(f"{k}_latency_us") or {}
        split[k] = f"{lat['p50']:,} / {lat['p99']:,}" if lat.get("count") else "—"
    return {
        "rate": r["throughput"], "p50": r["latency_us"]["p50"], "p99": r["latency_us"]["p99"],
        "same": split["same_node"], "cross": split["cross_node"],
        "cores": (cpu1 - cpu0) / (t1 - t0), "cpu_us": (cpu1 - cpu0) * 1e6 / max(delivered, 1),
        "redis_per": cmds / max(delivered, 1), "forwarded": forwarded / max(delivered, 1), "relayed": relayed,
        "lost": r.get("lost", 0), "dup": r.get("duplicated", 0),
    }


def main():
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "imserver", "-p", "loadgen"], cwd=ROOT, check=True)
    rdir = tempfile.mkdtemp(prefix="cluster-redis-")
    redis = subprocess.Popen(["redis-server", "--port", str(REDIS_PORT), "--save", "", "--appendonly", "no",
                              "--dir", rdir], stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    res = {(s, l): [] for s in SETUPS for l in LOADS}
    base = 500_000
    try:
        for r in range(ROUNDS):
            for load in LOADS:
                for n in (SETUPS if r % 2 == 0 else tuple(reversed(SETUPS))):
                    base += 1000
                    redis_cli("FLUSHALL")
                    x = once(n, load, base, redis.pid)
                    res[(n, load)].append(x)
                    print(f"round {r + 1}, {load}, {n}: {x['rate']:,.0f}/s, {x['cores']:.2f} cores, "
                          f"{x['cpu_us']:.2f} us CPU/delivery, {x['redis_per']:.3f} Redis commands/delivery, "
                          f"same-node p50/p99 {x['same']} us, cross-node {x['cross']} us, lost {x['lost']}", flush=True)
    finally:
        redis.terminate()
        redis.wait(timeout=10)
        shutil.rmtree(rdir, ignore_errors=True)
    med = lambda v: sorted(v)[len(v) // 2]
    out = ["# One node and three, side by side", "",
           f"Written by `benches/e2e/cluster.py` on {time.strftime('%Y-%m-%d')} ({os.cpu_count()} cores, shared "
           "and noisy; loadgen and redis-server share them). Same stores both ways (Redis offline store and groups); "
           "one node with 2 shards, or three clustered nodes with 1 shard each; `loadgen` over TCP, "
           f"{DURATION} per run; with three nodes the users are spread with `--targets` (relayed: most "
           "clients land on a node that is not their home) or go to their home (`--connect-home`). "
           f"{ROUNDS} round(s), alternating. Server CPU is every imserver process plus redis-server. Each cell: one "
           "value per round (latency pairs: one per round, separated by ·). Same-node and cross-node latency: p50 / p99 µs of the deliveries whose sender and "
           "receiver have the same home node, and of those that cross nodes.", ""]
    for load in LOADS:
        one = med([x["cpu_us"] for x in res.get(("1 node", load)) or res[(SETUPS[0], load)]])
        out += [f"## {load}", "", f"`loadgen {' '.join(LOADS[load])}`", "",
                "| setup | deliveries/s | p50 µs | p99 µs | same-node p50 / p99 µs | cross-node p50 / p99 µs | "
                "server + Redis cores | CPU µs per delivery | vs one node | Redis commands per delivery | "
                "forwarded per delivery | relayed logins | lost |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for n in SETUPS:
            v = res[(n, load)]
            j = lambda k, f: " / ".join(f.format(x[k]) for x in v)
            out.append(f"| {n} | {j('rate', '{:,.0f}')} | {j('p50', '{}')} | {j('p99', '{}')} | "
                       f"{' · '.join(x['same'] for x in v)} | {' · '.join(x['cross'] for x in v)} | {j('cores', '{:.2f}')} | "
                       f"{j('cpu_us', '{:.2f}')} | {med([x['cpu_us'] for x in v]) / one:.2f}× | "
                       f"{j('redis_per', '{:.3f}')} | {j('forwarded', '{:.2f}')} | {j('relayed', '{:.0f}')} | "
                       f"{j('lost', '{}')} |")
        out.append("")
    out += ["\"vs one node\" is the median CPU per delivery against the single node's in the same load (the cost "
            "of crossing nodes: the XADD, XREADGROUP, XACK and XDEL shares, the entry encoding, the relay of "
            "clients connected to another node than their home). Redis commands per delivery include the leases, "
            "the idle inbox reads and (group) the member lookups.", ""]
    open(OUT, "w").write("\n".join(out))
    print("\n".join(out))


if __name__ == "__main__":
    main()
