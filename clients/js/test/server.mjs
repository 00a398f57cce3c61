// Test harness: runs the real imserver binary (IMSERVER_BIN, default the workspace's debug
// build) on free loopback ports with its own data directory and a fresh self-signed
// certificate, mints tokens through its HTTP API, and forwards TCP through a proxy whose
// connections a test can cut.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, existsSync } from "node:fs";
import { createServer, connect } from "node:net";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import WebSocket from "ws";

const here = dirname(fileURLToPath(import.meta.url));
export const BIN = process.env.IMSERVER_BIN ?? join(here, "../../../target/debug/imserver");
export const ADMIN = "test-admin-secret";

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

export class Server {
  static async start(env = {}) {
    if (!existsSync(BIN)) throw new Error(`no server binary at ${BIN}: run cargo build first or set IMSERVER_BIN`);
    const dir = mkdtempSync(join(tmpdir(), "imclient-js-"));
    execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
      "-addext", "subjectAltName=DNS:localhost", "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem")], { stdio: "ignore" });
    const s = new Server();
    s.dir = dir;
    s.ca = readFileSync(join(dir, "cert.pem"));
    [s.tcpPort, s.wsPort, s.httpPort, s.wssPort, s.tlsPort] = await Promise.all([1, 2, 3, 4, 5].map(freePort));
    s.child = spawn(BIN, ["--config", "/dev/null", "--shards", "2", "--bind", "127.0.0.1",
      "--tcp-port", String(s.tcpPort), "--ws-port", String(s.wsPort), "--data-dir", join(dir, "data")], {
      env: {
        ...process.env,
        RUST_LOG: "warn",
        IMSERVER_AUTH__SECRET: "test-secret",
        IMSERVER_CONTROL__PORT: String(s.httpPort),
        IMSERVER_CONTROL__ADMIN_SECRET: ADMIN,
        IMSERVER_TLS__ENABLED: "true",
        IMSERVER_TLS__CERT_PATH: join(dir, "cert.pem"),
        IMSERVER_TLS__KEY_PATH: join(dir, "key.pem"),
        IMSERVER_TLS__WSS_PORT: String(s.wssPort),
        IMSERVER_TLS__TCP_PORT: String(s.tlsPort),
        IMSERVER_RUNTIME__PIN_CORES: "false",
        IMSERVER_SESSION__CLOSE_LINGER_MS: "200",
        ...env,
      },
      stdio: ["ignore", "pipe", "inherit"],
    });
    await new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error("server did not start within 15 s")), 15000);
      createInterface({ input: s.child.stdout }).on("line", (l) => {
        if (l === "ready") {
          clearTimeout(t);
          resolve();
        }
      });
      s.child.on("exit", (code) => reject(new Error(`server exited with ${code}`)));
    });
    return s;
  }

  get ws() {
    return `ws://127.0.0.1:${this.wsPort}/ws`;
  }

  get wss() {
    return `wss://localhost:${this.wssPort}/wss`;
  }

  /** A WebSocket factory trusting the test certificate (Node's own WebSocket cannot take a CA). */
  get factory() {
    return (url) => new WebSocket(url, { ca: this.ca });
  }

  async api(method, path, body) {
    const res = await fetch(`http://127.0.0.1:${this.httpPort}${path}`, {
      method,
      headers: { "content-type": "application/json", token: ADMIN },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const v = await res.json();
    if (v.errCode !== 0) throw new Error(`${method} ${path}: ${JSON.stringify(v)}`);
    return v.data;
  }

  /** A token for `uid` from POST /auth/user_token (the OpenIM flow). */
  async token(uid) {
    return (await this.api("POST", "/auth/user_token", { secret: ADMIN, platform: 5, uid })).token;
  }

  async stop() {
    this.child.kill("SIGTERM");
    await new Promise((r) => (this.child.exitCode !== null ? r() : this.child.on("exit", r)));
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Forwards TCP to `port`; cut() drops every forwarded connection like a network failure. */
export class Forwarder {
  static async start(port) {
    const f = new Forwarder();
    f.sockets = new Set();
    f.server = createServer((inbound) => {
      const outbound = connect(port, "127.0.0.1");
      for (const s of [inbound, outbound]) {
        f.sockets.add(s);
        s.on("error", () => {});
        s.on("close", () => f.sockets.delete(s));
      }
      inbound.pipe(outbound);
      outbound.pipe(inbound);
    });
    await new Promise((r) => f.server.listen(0, "127.0.0.1", r));
    f.port = f.server.address().port;
    return f;
  }

  cut() {
    for (const s of this.sockets) s.resetAndDestroy();
    this.sockets.clear();
  }

  close() {
    this.cut();
    this.server.close();
  }
}

/** Resolves with the next `event` of `client` within `ms`. */
export function next(client, event, ms = 10000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      off();
      reject(new Error(`no "${event}" within ${ms} ms`));
    }, ms);
    const off = client.on(event, (v) => {
      clearTimeout(t);
      off();
      resolve(v);
    });
  });
}

/** Collects `n` messages of `client` within `ms`. */
export function collect(client, n, ms = 10000) {
  return new Promise((resolve, reject) => {
    const got = [];
    const t = setTimeout(() => {
      off();
      reject(new Error(`${got.length} of ${n} messages within ${ms} ms`));
    }, ms);
    const off = client.on("message", (m) => {
      got.push(m);
      if (got.length === n) {
        clearTimeout(t);
        off();
        resolve(got);
      }
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** `promise`, or a rejection naming `what` after `ms`. */
export function within(promise, ms, what) {
  let t;
  const timeout = new Promise((_, reject) => (t = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)));
  return Promise.race([promise, timeout]).finally(() => clearTimeout(t));
}
