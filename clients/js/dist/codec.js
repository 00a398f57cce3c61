/**
 * The binary codec of imserver's protocol: every packet in both directions, as plain
 * objects. One packet is one WebSocket binary message (TCP adds a 4-byte length prefix,
 * which this package does not use). No I/O here.
 *
 * Message ids are 32 bytes on the wire and strings here: each byte is one character code
 * (0–255), so the 32 lowercase hex characters clients send read as themselves and any
 * other bytes still round-trip.
 */
/** Command bytes. */
export const Cmd = {
    CONNECT: 1,
    CONNECT_ACK: 2,
    PUBLISH: 3,
    PUB_ACK: 4,
    GROUP_PUBLISH: 5,
    GROUP_PUB_ACK: 6,
    PING: 7,
    PING_RESP: 8,
    DISCONNECT: 9,
    INVALID_PACKET: 10,
    GROUP_PART_PUBLISH: 11,
    GROUP_PART_PUB_ACK: 12,
    PUB_ERR: 13,
    LOGOUT: 20,
};
/** CONNECT flag bit 0: the client understands PUB_ERR and may PING. */
export const FLAG_EXTENSIONS = 0x01;
/** Bytes that are not a valid packet. */
export class DecodeError extends Error {
    constructor(message) {
        super(message);
        this.name = "DecodeError";
    }
}
const utf8 = new TextEncoder();
class Writer {
    buf;
    view;
    pos = 0;
    constructor(size) {
        this.buf = new Uint8Array(size);
        this.view = new DataView(this.buf.buffer);
    }
    u8(v) {
        this.view.setUint8(this.pos, v);
        this.pos += 1;
    }
    u16(v) {
        this.view.setUint16(this.pos, v);
        this.pos += 2;
    }
    u32(v) {
        this.view.setUint32(this.pos, v);
        this.pos += 4;
    }
    bytes(b) {
        this.buf.set(b, this.pos);
        this.pos += b.length;
    }
    id(id) {
        for (let i = 0; i < 32; i++)
            this.buf[this.pos + i] = id.charCodeAt(i);
        this.pos += 32;
    }
    bytes16(b) {
        this.u16(b.length);
        this.bytes(b);
    }
}
class Reader {
    buf;
    view;
    pos = 1;
    constructor(buf) {
        this.buf = buf;
        this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    }
    need(n) {
        if (this.pos + n > this.buf.length) {
            throw new DecodeError(`packet ${this.buf[0]} cut short: ${this.pos + n - this.buf.length} more bytes needed`);
        }
    }
    u8() {
        this.need(1);
        return this.view.getUint8(this.pos++);
    }
    u16() {
        this.need(2);
        const v = this.view.getUint16(this.pos);
        this.pos += 2;
        return v;
    }
    u32() {
        this.need(4);
        const v = this.view.getUint32(this.pos);
        this.pos += 4;
        return v;
    }
    take(n) {
        this.need(n);
        const b = this.buf.subarray(this.pos, this.pos + n);
        this.pos += n;
        return b;
    }
    id() {
        return String.fromCharCode(...this.take(32));
    }
    bytes16() {
        return this.take(this.u16());
    }
    targets() {
        const n = this.u16();
        this.need(n * 4);
        const out = new Array(n);
        for (let i = 0; i < n; i++)
            out[i] = this.u32();
        return out;
    }
    finish(value) {
        if (this.pos !== this.buf.length) {
            throw new DecodeError(`packet ${this.buf[0]} has ${this.buf.length - this.pos} bytes left over`);
        }
        return value;
    }
}
function checkId(id) {
    if (id.length !== 32 || !/^[\x00-\xff]{32}$/.test(id)) {
        throw new RangeError("a message id is 32 characters with codes 0-255");
    }
}
function checkLen(name, n, max) {
    if (n > max)
        throw new RangeError(`${name} over ${max}`);
}
/** The command byte of each packet that is nothing else. */
const EMPTY_CMD = {
    ping: Cmd.PING,
    pingResp: Cmd.PING_RESP,
    disconnect: Cmd.DISCONNECT,
    invalidPacket: Cmd.INVALID_PACKET,
    logout: Cmd.LOGOUT,
};
const idOnly = { pubAck: Cmd.PUB_ACK, groupPubAck: Cmd.GROUP_PUB_ACK, partPubAck: Cmd.GROUP_PART_PUB_ACK };
/** Encodes a client packet. Throws RangeError on a field that does not fit its size. */
export function encodeClient(p) {
    switch (p.type) {
        case "connect": {
            const u = utf8.encode(p.username);
            const pw = utf8.encode(p.password);
            checkLen("username", u.length, 0xffff);
            checkLen("password", pw.length, 0xffff);
            if (p.flags !== undefined && p.role === undefined)
                throw new RangeError("flags need a role");
            const w = new Writer(5 + u.length + pw.length + (p.role !== undefined ? 1 : 0) + (p.flags !== undefined ? 1 : 0));
            w.u8(Cmd.CONNECT);
            w.bytes16(u);
            w.bytes16(pw);
            if (p.role !== undefined)
                w.u8(p.role);
            if (p.flags !== undefined)
                w.u8(p.flags);
            return w.buf;
        }
        case "publish":
        case "groupPublish": {
            checkId(p.id);
            checkLen("payload", p.payload.length, 0xffff);
            const w = new Writer(1 + 4 + 32 + 2 + p.payload.length);
            w.u8(p.type === "publish" ? Cmd.PUBLISH : Cmd.GROUP_PUBLISH);
            w.u32(p.type === "publish" ? p.to : p.group);
            w.id(p.id);
            w.bytes16(p.payload);
            return w.buf;
        }
        case "partPublish": {
            checkId(p.id);
            checkLen("payload", p.payload.length, 0xffff);
            checkLen("targets", p.targets.length, 0xffff);
            const w = new Writer(1 + 4 + 32 + 2 + 4 * p.targets.length + 2 + p.payload.length);
            w.u8(Cmd.GROUP_PART_PUBLISH);
            w.u32(p.group);
            w.id(p.id);
            w.u16(p.targets.length);
            for (const t of p.targets)
                w.u32(t);
            w.bytes16(p.payload);
            return w.buf;
        }
        case "pubAck":
        case "groupPubAck":
        case "partPubAck": {
            checkId(p.id);
            const w = new Writer(33);
            w.u8(idOnly[p.type]);
            w.id(p.id);
            return w.buf;
        }
        case "ping":
            return Uint8Array.of(Cmd.PING);
        case "pingResp":
            return Uint8Array.of(Cmd.PING_RESP);
        case "disconnect":
            return Uint8Array.of(Cmd.DISCONNECT);
    }
}
/** The ack types by command: one layout (an id), both directions. */
const ACKS = {
    [Cmd.PUB_ACK]: "pubAck",
    [Cmd.GROUP_PUB_ACK]: "groupPubAck",
    [Cmd.GROUP_PART_PUB_ACK]: "partPubAck",
};
/** Packets that are only their command byte, by direction. */
const EMPTY_FROM_CLIENT = {
    [Cmd.PING]: "ping",
    [Cmd.PING_RESP]: "pingResp",
    [Cmd.DISCONNECT]: "disconnect",
};
const EMPTY_FROM_SERVER = {
    ...EMPTY_FROM_CLIENT,
    [Cmd.INVALID_PACKET]: "invalidPacket",
    [Cmd.LOGOUT]: "logout",
};
const textDecoder = new TextDecoder();
/** The layouts the two directions share: acks, empty packets, group and part-group bodies. */
function decodeShared(r, empty, group, part) {
    const c = r.buf[0];
    if (c in ACKS)
        return r.finish({ type: ACKS[c], id: r.id() });
    if (c in empty)
        return r.finish({ type: empty[c] });
    if (c === Cmd.GROUP_PUBLISH)
        return r.finish({ type: group, group: r.u32(), id: r.id(), payload: r.bytes16() });
    if (c === Cmd.GROUP_PART_PUBLISH) {
        return r.finish({ type: part, group: r.u32(), id: r.id(), targets: r.targets(), payload: r.bytes16() });
    }
    return undefined;
}
/** Decodes one server packet (the whole buffer). Throws DecodeError. */
export function decodeServer(buf) {
    if (buf.length === 0)
        throw new DecodeError("empty packet");
    const r = new Reader(buf);
    switch (buf[0]) {
        case Cmd.CONNECT_ACK:
            return r.finish({ type: "connectAck", code: r.u8() });
        case Cmd.PUBLISH:
            return r.finish({ type: "push", id: r.id(), payload: r.bytes16() });
        case Cmd.PUB_ERR:
            return r.finish({ type: "pubErr", id: r.id(), code: r.u32() });
    }
    const shared = decodeShared(r, EMPTY_FROM_SERVER, "groupPush", "partPush");
    if (shared)
        return shared;
    throw new DecodeError(`unknown command ${buf[0]}`);
}
/** Decodes one client packet: what a server (or a test) reads. Throws DecodeError. */
export function decodeClient(buf) {
    if (buf.length === 0)
        throw new DecodeError("empty packet");
    const r = new Reader(buf);
    switch (buf[0]) {
        case Cmd.CONNECT: {
            const username = textDecoder.decode(r.bytes16());
            const password = textDecoder.decode(r.bytes16());
            const p = { type: "connect", username, password };
            if (r.pos < buf.length)
                p.role = r.u8();
            if (r.pos < buf.length)
                p.flags = r.u8();
            return r.finish(p);
        }
        case Cmd.PUBLISH:
            return r.finish({ type: "publish", to: r.u32(), id: r.id(), payload: r.bytes16() });
    }
    const shared = decodeShared(r, EMPTY_FROM_CLIENT, "groupPublish", "partPublish");
    if (shared)
        return shared;
    throw new DecodeError(`unknown command ${buf[0]}`);
}
/** Encodes a server packet: what a server (or a test) writes. */
export function encodeServer(p) {
    switch (p.type) {
        case "connectAck":
            return Uint8Array.of(Cmd.CONNECT_ACK, p.code);
        case "push": {
            const w = new Writer(1 + 32 + 2 + p.payload.length);
            w.u8(Cmd.PUBLISH);
            w.id(p.id);
            w.bytes16(p.payload);
            return w.buf;
        }
        case "groupPush":
            return encodeClient({ type: "groupPublish", group: p.group, id: p.id, payload: p.payload });
        case "partPush":
            return encodeClient({ type: "partPublish", group: p.group, id: p.id, targets: p.targets, payload: p.payload });
        case "pubAck":
        case "groupPubAck":
        case "partPubAck":
            return encodeClient({ type: p.type, id: p.id });
        case "pubErr": {
            const w = new Writer(37);
            w.u8(Cmd.PUB_ERR);
            w.id(p.id);
            w.u32(p.code);
            return w.buf;
        }
        case "ping":
        case "pingResp":
        case "disconnect":
        case "invalidPacket":
        case "logout":
            return Uint8Array.of(EMPTY_CMD[p.type]);
    }
}
/** A fresh message id: a random UUID as 32 lowercase hex characters. */
export function newMsgId() {
    return crypto.randomUUID().replaceAll("-", "");
}
