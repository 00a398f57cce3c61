"""What the focused benchmark scripts share: reading a process's memory and CPU from /proc,
and starting the targets on private 127.0.0.1 ports (a release build of this server, the echo
baseline, mosquitto configured as its best users would), waiting until each listens."""
import os
import socket
import subprocess
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
REL = os.path.join(ROOT, "target/release")


def rss_bytes(pid):
    """Resident memory of a process."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid):
    """User + system CPU time a process has used."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def start_imserver(data_dir, tcp_port, ws_port, control_port, env=None, args=(), binary=None):
    """Starts the server with no config file (embedded defaults) on 127.0.0.1 and returns once it
    prints `ready`; stdout is kept for that, stderr dropped, logs at warn."""
    p = subprocess.Popen([binary or f"{REL}/imserver", "--config", "/dev/null", "--bind", "127.0.0.1", *args,
                          "--tcp-port", str(tcp_port), "--ws-port", str(ws_port), "--data-dir", data_dir],
                         env=dict(os.environ, RUST_LOG="warn", IMSERVER_CONTROL__PORT=str(control_port), **(env or {})),
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in p.stdout:
        if line.strip() == "ready":
            break
    return p


def wait_port(port):
    """Returns once something accepts connections on 127.0.0.1:`port` (10 s at most)."""
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"port {port} did not open")


def start_echo(port):
    """The echo baseline (loadgen's `echo-server`), listening."""
    p = subprocess.Popen([f"{REL}/echo-server", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return p


def start_mosquitto(work, port):
    """mosquitto as its best users run it: Nagle off (`set_tcp_nodelay true`), anonymous, no
    in-flight cap; the config file goes into `work`. Returns once it listens."""
    conf = os.path.join(work, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
                "max_queued_messages 100000\nmax_inflight_messages 0\n")
    p = subprocess.Popen(["mosquitto", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return p
