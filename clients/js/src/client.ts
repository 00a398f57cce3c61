/**
 * ImClient: one logged-in user over ws or wss. Sends and resolves on the server's
 * acknowledgement, hands incoming messages over once each, acknowledges them, answers
 * heartbeats and reconnects with exponential back-off and jitter, resending unanswered
 * publishes with the same id (the server de-duplicates them).
 */

import { Cmd, DecodeError, FLAG_EXTENSIONS, decodeServer, encodeClient, newMsgId } from "./codec.js";
import type { ClientPacket, ServerPacket } from "./codec.js";

/** The subset of the WebSocket API the client uses (browsers, Node 22+, the `ws` package). */
export interface WebSocketLike {
  binaryType: string;
  readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code?: number; reason?: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
}

/** Makes a WebSocket for a URL; the default is `new WebSocket(url)`. */
export type WebSocketFactory = (url: string) => WebSocketLike;

export interface ClientOptions {
  /** `ws://HOST:9095/ws` or `wss://HOST:8443/wss`. */
  url: string;
  uid: number;
  /** The CONNECT password (from the server's `POST /auth/user_token`), or a function that fetches a fresh one for each login. */
  token: string | (() => Promise<string>);
  /** The CONNECT role byte (0). */
  role?: number;
  /** PUB_ERR for refused sends and client PING (true). Without, a refused send never settles. */
  extensions?: boolean;
  /** Acknowledge a message once the "message" listeners returned (true); else call `Message.ack()`. */
  autoAck?: boolean;
  /** First reconnect delay ceiling in ms (250); doubles per failure up to `backoffMaxMs` (30000). */
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  /** With extensions: PING after this long without a packet from the server, give up after twice as long (25000). */
  pingIntervalMs?: number;
  /** Socket open plus CONNECT_ACK (10000). */
  connectTimeoutMs?: number;
  /** Ids of handed-over messages remembered to drop redelivered copies (4096). */
  dedupeWindow?: number;
  webSocket?: WebSocketFactory;
}

/** The server's JSON envelope around a payload (the default `delivery.envelope = "json"`). */
export interface Envelope {
  from: string;
  to: string;
  role: string;
  content: string;
}

/** A login the server refused (CONNECT_ACK code), or one that failed to happen. */
export class ConnectError extends Error {
  constructor(message: string, readonly code?: number) {
    super(message);
    this.name = "ConnectError";
  }
}

/** A send that did not succeed: refused with a PUB_ERR code, stopped, or invalid. */
export class SendError extends Error {
  constructor(message: string, readonly reason: "refused" | "stopped" | "invalid", readonly code?: number) {
    super(message);
    this.name = "SendError";
  }
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** A message pushed by the server. */
export class Message {
  /** @internal */
  constructor(
    readonly id: string,
    readonly kind: "direct" | "group" | "part",
    readonly payload: Uint8Array,
    readonly group: number | undefined,
    readonly targets: number[] | undefined,
    private readonly acker: (m: Message) => void,
  ) {}

  /** The JSON envelope, if the payload is one. */
  get envelope(): Envelope | undefined {
    try {
      const v = JSON.parse(decoder.decode(this.payload));
      return typeof v === "object" && v !== null && typeof v.from === "string" ? (v as Envelope) : undefined;
    } catch {
      return undefined;
    }
  }

  /** The sender's uid from the envelope. */
  get sender(): number | undefined {
    const from = this.envelope?.from;
    return from === undefined ? undefined : Number(from);
  }

  /** The sender's text (the envelope's content, or the raw payload as UTF-8). */
  get text(): string {
    return this.envelope?.content ?? decoder.decode(this.payload);
  }

  /** Acknowledges the message (manual acks); after a reconnect it goes to the new session. */
  ack(): void {
    this.acker(this);
  }
}

/** The events and their payloads. */
export interface ClientEventMap {
  connected: { reconnect: boolean };
  message: Message;
  disconnected: { reason: string };
  /** The same user logged in elsewhere; the client stopped and will not reconnect. */
  loggedOut: undefined;
  /** The client stopped for good: closed, logged out or refused on a reconnect. */
  stopped: { error?: Error };
}

type Listener<K extends keyof ClientEventMap> = (ev: ClientEventMap[K]) => void;

interface Pending {
  frame: Uint8Array;
  resolve: (id: string) => void;
  reject: (e: SendError) => void;
}

const ACK_OF = { direct: "pubAck", group: "groupPubAck", part: "partPubAck" } as const;
type AckType = (typeof ACK_OF)[keyof typeof ACK_OF];

export class ImClient {
  readonly uid: number;
  private readonly opts: Required<Omit<ClientOptions, "webSocket" | "token">> & Pick<ClientOptions, "token">;
  private readonly factory: WebSocketFactory;
  private ws: WebSocketLike | null = null;
  private readonly listeners = new Map<keyof ClientEventMap, Set<Listener<never>>>();
  private readonly pending = new Map<string, Pending>();
  /** Handed-over ids: "unacked", or the ack type once acknowledged. */
  private readonly recent = new Map<string, "unacked" | AckType>();
  private attempt = 0;
  private stopped = false;
  private lastRx = 0;
  private pingSent = false;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private heartbeat: ReturnType<typeof setInterval> | null = null;

  constructor(options: ClientOptions) {
    this.uid = options.uid;
    this.opts = {
      url: options.url,
      uid: options.uid,
      token: options.token,
      role: options.role ?? 0,
      extensions: options.extensions ?? true,
      autoAck: options.autoAck ?? true,
      backoffInitialMs: options.backoffInitialMs ?? 250,
      backoffMaxMs: options.backoffMaxMs ?? 30000,
      pingIntervalMs: options.pingIntervalMs ?? 25000,
      connectTimeoutMs: options.connectTimeoutMs ?? 10000,
      dedupeWindow: options.dedupeWindow ?? 4096,
    };
    this.factory =
      options.webSocket ??
      ((url) => {
        const Ctor = (globalThis as { WebSocket?: new (url: string) => WebSocketLike }).WebSocket;
        if (!Ctor) throw new ConnectError("no WebSocket here: pass options.webSocket (e.g. from the `ws` package)");
        return new Ctor(url);
      });
  }

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof ClientEventMap>(event: K, fn: Listener<K>): () => void {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(fn as Listener<never>);
    return () => set.delete(fn as Listener<never>);
  }

  private emit<K extends keyof ClientEventMap>(event: K, value: ClientEventMap[K]): void {
    for (const fn of this.listeners.get(event) ?? []) {
      try {
        (fn as Listener<K>)(value);
      } catch (e) {
        console.error(`imclient: a "${event}" listener threw`, e);
      }
    }
  }

  /** Whether a session is up right now. */
  get connected(): boolean {
    return this.ws !== null;
  }

  /** Connects and logs in; resolves on CONNECT_ACK 0, rejects with ConnectError otherwise (not retried). */
  async connect(): Promise<void> {
    const ws = await this.login();
    this.attach(ws);
    this.emit("connected", { reconnect: false });
  }

  /** Sends to user `to`; resolves with the message id once the server accepted it. */
  send(to: number, content: string | Uint8Array, id: string = newMsgId()): Promise<string> {
    return this.publish({ type: "publish", to, id, payload: bytes(content) });
  }

  /** Sends to every member of group `gid` but this session. */
  sendGroup(gid: number, content: string | Uint8Array, id: string = newMsgId()): Promise<string> {
    return this.publish({ type: "groupPublish", group: gid, id, payload: bytes(content) });
  }

  /** Sends to the listed members of group `gid`. */
  sendPart(gid: number, targets: number[], content: string | Uint8Array, id: string = newMsgId()): Promise<string> {
    if (targets.length === 0) return Promise.reject(new SendError("a part publish needs targets", "invalid"));
    return this.publish({ type: "partPublish", group: gid, id, targets, payload: bytes(content) });
  }

  /** Says DISCONNECT and stops; unanswered sends reject with reason "stopped". */
  close(): void {
    if (this.stopped) return;
    this.sendPacket({ type: "disconnect" });
    this.stop(undefined);
  }

  private publish(p: ClientPacket & { id: string }): Promise<string> {
    if (this.stopped) return Promise.reject(new SendError("the client stopped", "stopped"));
    let frame: Uint8Array;
    try {
      frame = encodeClient(p);
    } catch (e) {
      return Promise.reject(new SendError(String((e as Error).message), "invalid"));
    }
    return new Promise((resolve, reject) => {
      this.pending.delete(p.id);
      this.pending.set(p.id, { frame, resolve, reject });
      this.ws?.send(frame);
    });
  }

  private sendPacket(p: ClientPacket): void {
    this.ws?.send(encodeClient(p));
  }

  private async token(): Promise<string> {
    const t = this.opts.token;
    return typeof t === "string" ? t : t();
  }

  /** Opens a socket and logs in. */
  private async login(): Promise<WebSocketLike> {
    const password = await this.token();
    return new Promise((resolve, reject) => {
      let ws: WebSocketLike;
      try {
        ws = this.factory(this.opts.url);
      } catch (e) {
        reject(e instanceof ConnectError ? e : new ConnectError(String(e)));
        return;
      }
      ws.binaryType = "arraybuffer";
      const fail = (e: ConnectError) => {
        clearTimeout(timeout);
        ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
        try {
          ws.close();
        } catch {
          /* already closed */
        }
        reject(e);
      };
      const timeout = setTimeout(() => fail(new ConnectError("no CONNECT_ACK within the connect timeout")), this.opts.connectTimeoutMs);
      ws.onerror = () => fail(new ConnectError(`cannot connect to ${this.opts.url}`));
      ws.onclose = (ev) => fail(new ConnectError(`closed before CONNECT_ACK (${ev.code ?? "?"})`));
      ws.onopen = () => {
        const connect: ClientPacket = { type: "connect", username: String(this.uid), password, role: this.opts.role };
        if (this.opts.extensions) connect.flags = FLAG_EXTENSIONS;
        ws.send(encodeClient(connect));
      };
      ws.onmessage = (ev) => {
        let p: ServerPacket;
        try {
          p = decodeServer(toBytes(ev.data));
        } catch (e) {
          return fail(new ConnectError(`invalid answer to CONNECT: ${(e as Error).message}`));
        }
        if (p.type !== "connectAck") return fail(new ConnectError(`expected CONNECT_ACK, got ${p.type}`));
        if (p.code !== 0) return fail(new ConnectError(`login refused with code ${p.code}`, p.code));
        clearTimeout(timeout);
        // Installed now, synchronously: packets right behind the CONNECT_ACK find them.
        ws.onmessage = (e) => this.onPacket(ws, e.data);
        ws.onclose = (e) => this.lost(ws, `closed (${e.code ?? "?"}${e.reason ? ` ${e.reason}` : ""})`);
        ws.onerror = () => this.lost(ws, "socket error");
        resolve(ws);
      };
    });
  }

  /** Makes `ws` the session: resend what is unanswered, start the heartbeat. */
  private attach(ws: WebSocketLike): void {
    this.ws = ws;
    this.attempt = 0;
    this.lastRx = Date.now();
    this.pingSent = false;
    for (const p of this.pending.values()) ws.send(p.frame);
    if (this.opts.extensions) {
      const every = this.opts.pingIntervalMs;
      this.heartbeat = setInterval(() => this.beat(ws), Math.max(10, Math.floor(every / 4)));
    }
  }

  private beat(ws: WebSocketLike): void {
    const quiet = Date.now() - this.lastRx;
    if (this.pingSent && quiet >= 2 * this.opts.pingIntervalMs) {
      this.lost(ws, "no answer to PING");
    } else if (!this.pingSent && quiet >= this.opts.pingIntervalMs) {
      this.pingSent = true;
      ws.send(encodeClient({ type: "ping" }));
    }
  }

  private detach(): void {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = null;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(1000);
      } catch {
        /* already closed */
      }
    }
  }

  private lost(ws: WebSocketLike, reason: string): void {
    if (this.ws !== ws || this.stopped) return;
    this.detach();
    this.emit("disconnected", { reason });
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    const ceiling = Math.min(this.opts.backoffMaxMs, this.opts.backoffInitialMs * 2 ** Math.min(this.attempt, 20));
    this.attempt += 1;
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.stopped) return;
      this.login().then(
        (ws) => {
          if (this.stopped) return ws.close(1000);
          this.attach(ws);
          this.emit("connected", { reconnect: true });
        },
        (e: ConnectError) => {
          if (this.stopped) return;
          if (e.code === 3) this.stop(e);
          else this.scheduleReconnect();
        },
      );
    }, delay);
  }

  private stop(error: Error | undefined): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.detach();
    for (const p of this.pending.values()) p.reject(new SendError("the client stopped before the server answered", "stopped"));
    this.pending.clear();
    this.emit("stopped", error ? { error } : {});
  }

  private onPacket(ws: WebSocketLike, data: unknown): void {
    if (this.ws !== ws) return;
    this.lastRx = Date.now();
    this.pingSent = false;
    let p: ServerPacket;
    try {
      p = decodeServer(toBytes(data));
    } catch (e) {
      return this.lost(ws, `invalid packet from the server: ${(e as DecodeError).message}`);
    }
    switch (p.type) {
      case "push":
        return this.deliver(new Message(p.id, "direct", p.payload, undefined, undefined, (m) => this.ack(m)));
      case "groupPush":
        return this.deliver(new Message(p.id, "group", p.payload, p.group, undefined, (m) => this.ack(m)));
      case "partPush":
        return this.deliver(new Message(p.id, "part", p.payload, p.group, p.targets, (m) => this.ack(m)));
      case "pubAck":
      case "groupPubAck":
      case "partPubAck": {
        const pending = this.pending.get(p.id);
        this.pending.delete(p.id);
        return pending?.resolve(p.id);
      }
      case "pubErr": {
        const pending = this.pending.get(p.id);
        this.pending.delete(p.id);
        return pending?.reject(new SendError(`refused by the server with code ${p.code}`, "refused", p.code));
      }
      case "ping":
        return ws.send(encodeClient({ type: "pingResp" }));
      case "pingResp":
        return;
      case "logout":
        this.emit("loggedOut", undefined);
        return this.stop(undefined);
      case "disconnect":
        return this.lost(ws, "the server sent DISCONNECT");
      case "invalidPacket":
        return this.lost(ws, "the server answered INVALID_PACKET");
      case "connectAck":
        return this.lost(ws, "unexpected CONNECT_ACK");
    }
  }

  private deliver(m: Message): void {
    const seen = this.recent.get(m.id);
    if (seen === "unacked") return; // the application has it and will acknowledge it
    if (seen !== undefined) return this.sendPacket({ type: seen, id: m.id }); // acknowledged before: again
    this.recent.set(m.id, "unacked");
    if (this.recent.size > this.opts.dedupeWindow) {
      const oldest = this.recent.keys().next().value;
      if (oldest !== undefined) this.recent.delete(oldest);
    }
    this.emit("message", m);
    if (this.opts.autoAck) m.ack();
  }

  private ack(m: Message): void {
    const type = ACK_OF[m.kind];
    if (this.recent.get(m.id) === type) return;
    if (this.recent.has(m.id)) this.recent.set(m.id, type);
    this.sendPacket({ type, id: m.id });
  }
}

function bytes(content: string | Uint8Array): Uint8Array {
  return typeof content === "string" ? encoder.encode(content) : content;
}

function toBytes(data: unknown): Uint8Array {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new DecodeError("the server sent a text message");
}
