"""What the focused benchmark scripts share: reading a process's memory and CPU from /proc,
and starting a release build of this server on private ports, waiting until it is ready."""
import os
import subprocess

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
