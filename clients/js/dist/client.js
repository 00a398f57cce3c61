/**
 * ImClient: one logged-in user over ws or wss. Sends and resolves on the server's
 * acknowledgement, hands incoming messages over once each, acknowledges them, answers
 * heartbeats and reconnects with exponential back-off and jitter, resending unanswered
 * publishes with the same id (the server de-duplicates them).
 */
import { DecodeError, FLAG_EXTENSIONS, decodeServer, encodeClient, newMsgId } from "./codec.js";
/** A login the server refused (CONNECT_ACK code), or one that failed to happen. */
export class ConnectError extends Error {
    code;
    constructor(message, code) {
        super(message);
        this.code = code;
        this.name = "ConnectError";
    }
}
/** A send that did not succeed: refused with a PUB_ERR code, stopped, or invalid. */
export class SendError extends Error {
    reason;
    code;
    constructor(message, reason, code) {
        super(message);
        this.reason = reason;
        this.code = code;
        this.name = "SendError";
    }
}
const decoder = new TextDecoder();
const encoder = new TextEncoder();
/** A message pushed by the server. */
export class Message {
    id;
    kind;
    payload;
    group;
    targets;
    acker;
    /** @internal */
    constructor(id, kind, payload, group, targets, acker) {
        this.id = id;
        this.kind = kind;
        this.payload = payload;
        this.group = group;
        this.targets = targets;
        this.acker = acker;
    }
    /** The JSON envelope, if the payload is one. */
    get envelope() {
        try {
            const v = JSON.parse(decoder.decode(this.payload));
            return typeof v === "object" && v !== null && typeof v.from === "string" ? v : undefined;
        }
        catch {
            return undefined;
        }
    }
    /** The sender's uid from the envelope. */
    get sender() {
        const from = this.envelope?.from;
        return from === undefined ? undefined : Number(from);
    }
    /** The sender's text (the envelope's content, or the raw payload as UTF-8). */
    get text() {
        return this.envelope?.content ?? decoder.decode(this.payload);
    }
    /** Acknowledges the message (manual acks); after a reconnect it goes to the new session. */
    ack() {
        this.acker(this);
    }
}
const ACK_OF = { direct: "pubAck", group: "groupPubAck", part: "partPubAck" };
export class ImClient {
    uid;
    opts;
    factory;
    ws = null;
    listeners = new Map();
    pending = new Map();
    /** Handed-over ids: "unacked", or the ack type once acknowledged. */
    recent = new Map();
    attempt = 0;
    stopped = false;
    lastRx = 0;
    pingSent = false;
    timer = null;
    heartbeat = null;
    constructor(options) {
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
                    const Ctor = globalThis.WebSocket;
                    if (!Ctor)
                        throw new ConnectError("no WebSocket here: pass options.webSocket (e.g. from the `ws` package)");
                    return new Ctor(url);
                });
    }
    /** Adds a listener; returns a function that removes it. */
    on(event, fn) {
        let set = this.listeners.get(event);
        if (!set)
            this.listeners.set(event, (set = new Set()));
        set.add(fn);
        return () => set.delete(fn);
    }
    emit(event, value) {
        for (const fn of this.listeners.get(event) ?? []) {
            try {
                fn(value);
            }
            catch (e) {
                console.error(`imclient: a "${event}" listener threw`, e);
            }
        }
    }
    /** Whether a session is up right now. */
    get connected() {
        return this.ws !== null;
    }
    /** Connects and logs in; resolves on CONNECT_ACK 0, rejects with ConnectError otherwise (not retried). */
    async connect() {
        const ws = await this.login();
        this.attach(ws);
        this.emit("connected", { reconnect: false });
    }
    /** Sends to user `to`; resolves with the message id once the server accepted it. */
    send(to, content, id = newMsgId()) {
        return this.publish({ type: "publish", to, id, payload: bytes(content) });
    }
    /** Sends to every member of group `gid` but this session. */
    sendGroup(gid, content, id = newMsgId()) {
        return this.publish({ type: "groupPublish", group: gid, id, payload: bytes(content) });
    }
    /** Sends to the listed members of group `gid`. */
    sendPart(gid, targets, content, id = newMsgId()) {
        if (targets.length === 0)
            return Promise.reject(new SendError("a part publish needs targets", "invalid"));
        return this.publish({ type: "partPublish", group: gid, id, targets, payload: bytes(content) });
    }
    /** Says DISCONNECT and stops; unanswered sends reject with reason "stopped". */
    close() {
        if (this.stopped)
            return;
        this.sendPacket({ type: "disconnect" });
        this.stop(undefined);
    }
    publish(p) {
        if (this.stopped)
            return Promise.reject(new SendError("the client stopped", "stopped"));
        let frame;
        try {
            frame = encodeClient(p);
        }
        catch (e) {
            return Promise.reject(new SendError(String(e.message), "invalid"));
        }
        return new Promise((resolve, reject) => {
            this.pending.delete(p.id);
            this.pending.set(p.id, { frame, resolve, reject });
            this.ws?.send(frame);
        });
    }
    sendPacket(p) {
        this.ws?.send(encodeClient(p));
    }
    async token() {
        const t = this.opts.token;
        return typeof t === "string" ? t : t();
    }
    /** Opens a socket and logs in. */
    async login() {
        const password = await this.token();
        return new Promise((resolve, reject) => {
            let ws;
            try {
                ws = this.factory(this.opts.url);
            }
            catch (e) {
                reject(e instanceof ConnectError ? e : new ConnectError(String(e)));
                return;
            }
            ws.binaryType = "arraybuffer";
            const fail = (e) => {
                clearTimeout(timeout);
                ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
                try {
                    ws.close();
                }
                catch {
                    /* already closed */
                }
                reject(e);
            };
            const timeout = setTimeout(() => fail(new ConnectError("no CONNECT_ACK within the connect timeout")), this.opts.connectTimeoutMs);
            ws.onerror = () => fail(new ConnectError(`cannot connect to ${this.opts.url}`));
            ws.onclose = (ev) => fail(new ConnectError(`closed before CONNECT_ACK (${ev.code ?? "?"})`));
            ws.onopen = () => {
                const connect = { type: "connect", username: String(this.uid), password, role: this.opts.role };
                if (this.opts.extensions)
                    connect.flags = FLAG_EXTENSIONS;
                ws.send(encodeClient(connect));
            };
            ws.onmessage = (ev) => {
                let p;
                try {
                    p = decodeServer(toBytes(ev.data));
                }
                catch (e) {
                    return fail(new ConnectError(`invalid answer to CONNECT: ${e.message}`));
                }
                if (p.type !== "connectAck")
                    return fail(new ConnectError(`expected CONNECT_ACK, got ${p.type}`));
                if (p.code !== 0)
                    return fail(new ConnectError(`login refused with code ${p.code}`, p.code));
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
    attach(ws) {
        this.ws = ws;
        this.attempt = 0;
        this.lastRx = Date.now();
        this.pingSent = false;
        for (const p of this.pending.values())
            ws.send(p.frame);
        if (this.opts.extensions) {
            const every = this.opts.pingIntervalMs;
            this.heartbeat = setInterval(() => this.beat(ws), Math.max(10, Math.floor(every / 4)));
        }
    }
    beat(ws) {
        const quiet = Date.now() - this.lastRx;
        if (this.pingSent && quiet >= 2 * this.opts.pingIntervalMs) {
            this.lost(ws, "no answer to PING");
        }
        else if (!this.pingSent && quiet >= this.opts.pingIntervalMs) {
            this.pingSent = true;
            ws.send(encodeClient({ type: "ping" }));
        }
    }
    detach() {
        if (this.heartbeat)
            clearInterval(this.heartbeat);
        this.heartbeat = null;
        const ws = this.ws;
        this.ws = null;
        if (ws) {
            ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
            try {
                ws.close(1000);
            }
            catch {
                /* already closed */
            }
        }
    }
    lost(ws, reason) {
        if (this.ws !== ws || this.stopped)
            return;
        this.detach();
        this.emit("disconnected", { reason });
        this.scheduleReconnect();
    }
    scheduleReconnect() {
        const ceiling = Math.min(this.opts.backoffMaxMs, this.opts.backoffInitialMs * 2 ** Math.min(this.attempt, 20));
        this.attempt += 1;
        const delay = ceiling / 2 + Math.random() * (ceiling / 2);
        this.timer = setTimeout(() => {
            this.timer = null;
            if (this.stopped)
                return;
            this.login().then((ws) => {
                if (this.stopped)
                    return ws.close(1000);
                this.attach(ws);
                this.emit("connected", { reconnect: true });
            }, (e) => {
                if (this.stopped)
                    return;
                if (e.code === 3)
                    this.stop(e);
                else
                    this.scheduleReconnect();
            });
        }, delay);
    }
    stop(error) {
        if (this.stopped)
            return;
        this.stopped = true;
        if (this.timer)
            clearTimeout(this.timer);
        this.detach();
        for (const p of this.pending.values())
            p.reject(new SendError("the client stopped before the server answered", "stopped"));
        this.pending.clear();
        this.emit("stopped", error ? { error } : {});
    }
    onPacket(ws, data) {
        if (this.ws !== ws)
            return;
        this.lastRx = Date.now();
        this.pingSent = false;
        let p;
        try {
            p = decodeServer(toBytes(data));
        }
        catch (e) {
            return this.lost(ws, `invalid packet from the server: ${e.message}`);
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
    deliver(m) {
        const seen = this.recent.get(m.id);
        if (seen === "unacked")
            return; // the application has it and will acknowledge it
        if (seen !== undefined)
            return this.sendPacket({ type: seen, id: m.id }); // acknowledged before: again
        this.recent.set(m.id, "unacked");
        if (this.recent.size > this.opts.dedupeWindow) {
            const oldest = this.recent.keys().next().value;
            if (oldest !== undefined)
                this.recent.delete(oldest);
        }
        this.emit("message", m);
        if (this.opts.autoAck)
            m.ack();
    }
    ack(m) {
        const type = ACK_OF[m.kind];
        if (this.recent.get(m.id) === type)
            return;
        if (this.recent.has(m.id))
            this.recent.set(m.id, type);
        this.sendPacket({ type, id: m.id });
    }
}
function bytes(content) {
    return typeof content === "string" ? encoder.encode(content) : content;
}
function toBytes(data) {
    if (data instanceof ArrayBuffer)
        return new Uint8Array(data);
    if (ArrayBuffer.isView(data))
        return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    throw new DecodeError("the server sent a text message");
}
