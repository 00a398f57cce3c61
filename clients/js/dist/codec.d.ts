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
export declare const Cmd: {
    readonly CONNECT: 1;
    readonly CONNECT_ACK: 2;
    readonly PUBLISH: 3;
    readonly PUB_ACK: 4;
    readonly GROUP_PUBLISH: 5;
    readonly GROUP_PUB_ACK: 6;
    readonly PING: 7;
    readonly PING_RESP: 8;
    readonly DISCONNECT: 9;
    readonly INVALID_PACKET: 10;
    readonly GROUP_PART_PUBLISH: 11;
    readonly GROUP_PART_PUB_ACK: 12;
    readonly PUB_ERR: 13;
    readonly LOGOUT: 20;
};
/** CONNECT flag bit 0: the client understands PUB_ERR and may PING. */
export declare const FLAG_EXTENSIONS = 1;
/** A packet a client sends. */
export type ClientPacket = {
    type: "connect";
    username: string;
    password: string;
    role?: number;
    flags?: number;
} | {
    type: "publish";
    to: number;
    id: string;
    payload: Uint8Array;
} | {
    type: "groupPublish";
    group: number;
    id: string;
    payload: Uint8Array;
} | {
    type: "partPublish";
    group: number;
    id: string;
    targets: number[];
    payload: Uint8Array;
} | {
    type: "pubAck" | "groupPubAck" | "partPubAck";
    id: string;
} | {
    type: "ping" | "pingResp" | "disconnect";
};
/** A packet the server sends. */
export type ServerPacket = {
    type: "connectAck";
    code: number;
} | {
    type: "push";
    id: string;
    payload: Uint8Array;
} | {
    type: "groupPush";
    group: number;
    id: string;
    payload: Uint8Array;
} | {
    type: "partPush";
    group: number;
    id: string;
    targets: number[];
    payload: Uint8Array;
} | {
    type: "pubAck" | "groupPubAck" | "partPubAck";
    id: string;
} | {
    type: "pubErr";
    id: string;
    code: number;
} | {
    type: "ping" | "pingResp" | "disconnect" | "invalidPacket" | "logout";
};
/** Bytes that are not a valid packet. */
export declare class DecodeError extends Error {
    constructor(message: string);
}
/** Encodes a client packet. Throws RangeError on a field that does not fit its size. */
export declare function encodeClient(p: ClientPacket): Uint8Array;
/** Decodes one server packet (the whole buffer). Throws DecodeError. */
export declare function decodeServer(buf: Uint8Array): ServerPacket;
/** Decodes one client packet: what a server (or a test) reads. Throws DecodeError. */
export declare function decodeClient(buf: Uint8Array): ClientPacket;
/** Encodes a server packet: what a server (or a test) writes. */
export declare function encodeServer(p: ServerPacket): Uint8Array;
/** A fresh message id: a random UUID as 32 lowercase hex characters. */
export declare function newMsgId(): string;
