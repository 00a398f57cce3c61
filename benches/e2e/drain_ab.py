#!/usr/bin/env python3
"""The offline drain measured with two load-generator binaries against one server, alternated
in one run: 200 receivers x 100 stored messages, 8 senders; the drain rate, the server's
redeliveries (from /metrics) and its CPU time. Written for the loadgen login fix (pushes that
arrived right behind CONNECT_ACK were dropped by the old login and redelivered 2 s later).

    benches/e2e/drain_ab.py OLD_LOADGEN [NEW_LOADGEN]   # server: target/release/imserver
"""
import json, os, subprocess, sys, tempfile, time, urllib.request
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
w = tempfile.mkdtemp()
env = dict(os.environ, IMSERVER_CONTROL__PORT="29400")
srv = subprocess.Popen([f"{root}/target/release/imserver", "--tcp-port", "29495", "--ws-port", "29496",
                        "--bind", "127.0.0.1", "--data-dir", f"{w}/data", "--log-level", "warn"],
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(2)
if srv.poll() is not None:
    sys.exit("the server did not start (ports 29495/29496/29400 in use?)")
def metric(kind):
    txt = urllib.request.urlopen("http://127.0.0.1:29400/metrics").read().decode()
    return sum(float(l.split()[-1]) for l in txt.splitlines()
               if l.startswith("im_messages_total") and f'event="{kind}"' in l)
def cpu():
    f = open(f"/proc/{srv.pid}/stat").read().split()
    return (int(f[13]) + int(f[14])) / os.sysconf("SC_CLK_TCK")
if len(sys.argv) < 2:
    sys.exit(__doc__)
bins = {"old": sys.argv[1], "new": sys.argv[2] if len(sys.argv) > 2 else f"{root}/target/release/loadgen"}
base = 1_000_000
try:
    for rnd in range(3):
        for name, lg in bins.items():
            base += 10_000
            r0, c0 = metric("redelivered"), cpu()
            p = subprocess.run([lg, "--target", "im", "--port", "29495", "--admin-url", "http://127.0.0.1:29400",
                                "--uid-base", str(base), "--duration", "20s", "--drain-timeout", "15s", "--size", "64",
                                "--json", "--quiet", "offline", "--receivers", "200", "--messages", "100", "--senders", "8"],
                               capture_output=True, text=True)
            r1, c1 = metric("redelivered"), cpu()
            if p.returncode != 0:
                print(name, "FAILED", p.stderr[-300:]); continue
            r = json.loads(p.stdout)
            print(f"{name} round {rnd+1}: {r['throughput']:,.0f} msg/s drained in {r['elapsed_s']:.2f} s, lost {r['lost']}, "
                  f"redelivered {r1 - r0:.0f}, server CPU {c1 - c0:.2f} s (both phases)")
finally:
    srv.terminate(); srv.wait()
