/**
 * ImClient: one logged-in user over ws or wss. Sends and resolves on the server's
 * acknowledgement, hands incoming messages over once each, acknowledges them, answers
 * heartbeats and reconnects with exponential back-off and jitter, resending unanswered
 * publishes with the same id (the server de-duplicates them).
 */
/** The subset of the WebSocket API the client uses (browsers, Node 22+, the `ws` package). */
export interface WebSocketLike {
    binaryType: string;
    readyState: number;
    onopen: ((ev: unknown) => void) | null;
    onmessage: ((ev: {
        data: unknown;
    }) => void) | null;
    onclose: ((ev: {
        code?: number;
        reason?: string;
    }) => void) | null;
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
export declare class ConnectError extends Error {
    readonly code?: number | undefined;
    constructor(message: string, code?: number | undefined);
}
/** A send that did not succeed: refused with a PUB_ERR code, stopped, or invalid. */
export declare class SendError extends Error {
    readonly reason: "refused" | "stopped" | "invalid";
    readonly code?: number | undefined;
    constructor(message: string, reason: "refused" | "stopped" | "invalid", code?: number | undefined);
}
/** A message pushed by the server. */
export declare class Message {
    readonly id: string;
    readonly kind: "direct" | "group" | "part";
    readonly payload: Uint8Array;
    readonly group: number | undefined;
    readonly targets: number[] | undefined;
    private readonly acker;
    /** @internal */
    constructor(id: string, kind: "direct" | "group" | "part", payload: Uint8Array, group: number | undefined, targets: number[] | undefined, acker: (m: Message) => void);
    /** The JSON envelope, if the payload is one. */
    get envelope(): Envelope | undefined;
    /** The sender's uid from the envelope. */
    get sender(): number | undefined;
    /** The sender's text (the envelope's content, or the raw payload as UTF-8). */
    get text(): string;
    /** Acknowledges the message (manual acks); after a reconnect it goes to the new session. */
    ack(): void;
}
/** The events and their payloads. */
export interface ClientEventMap {
    connected: {
        reconnect: boolean;
    };
    message: Message;
    disconnected: {
        reason: string;
    };
    /** The same user logged in elsewhere; the client stopped and will not reconnect. */
    loggedOut: undefined;
    /** The client stopped for good: closed, logged out or refused on a reconnect. */
    stopped: {
        error?: Error;
    };
}
type Listener<K extends keyof ClientEventMap> = (ev: ClientEventMap[K]) => void;
export declare class ImClient {
    readonly uid: number;
    private readonly opts;
    private readonly factory;
    private ws;
    private readonly listeners;
    private readonly pending;
    /** Handed-over ids: "unacked", or the ack type once acknowledged. */
    private readonly recent;
    private attempt;
    private stopped;
    private lastRx;
    private pingSent;
    private timer;
    private heartbeat;
    constructor(options: ClientOptions);
    /** Adds a listener; returns a function that removes it. */
    on<K extends keyof ClientEventMap>(event: K, fn: Listener<K>): () => void;
    private emit;
    /** Whether a session is up right now. */
    get connected(): boolean;
    /** Connects and logs in; resolves on CONNECT_ACK 0, rejects with ConnectError otherwise (not retried). */
    connect(): Promise<void>;
    /** Sends to user `to`; resolves with the message id once the server accepted it. */
    send(to: number, content: string | Uint8Array, id?: string): Promise<string>;
    /** Sends to every member of group `gid` but this session. */
    sendGroup(gid: number, content: string | Uint8Array, id?: string): Promise<string>;
    /** Sends to the listed members of group `gid`. */
    sendPart(gid: number, targets: number[], content: string | Uint8Array, id?: string): Promise<string>;
    /** Says DISCONNECT and stops; unanswered sends reject with reason "stopped". */
    close(): void;
    private publish;
    private sendPacket;
    private token;
    /** Opens a socket and logs in. */
    private login;
    /** Makes `ws` the session: resend what is unanswered, start the heartbeat. */
    private attach;
    private beat;
    private detach;
    private lost;
    private scheduleReconnect;
    private stop;
    private onPacket;
    private deliver;
    private ack;
}
export {};
