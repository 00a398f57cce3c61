/**
 * imclient: a client for imserver over WebSocket (ws/wss), for browsers and Node.js 20+.
 * No runtime dependencies. See README.md for a quick start.
 */
export { ImClient, Message, ConnectError, SendError } from "./client.js";
export type { ClientOptions, ClientEventMap, Envelope, WebSocketLike, WebSocketFactory } from "./client.js";
export { Cmd, DecodeError, FLAG_EXTENSIONS, decodeClient, decodeServer, encodeClient, encodeServer, newMsgId } from "./codec.js";
export type { ClientPacket, ServerPacket } from "./codec.js";
