// The codec against the protocol's example bytes: the original protocol description's
// examples (uid 1234, MsgId "550e8400e29b41d4a716446655440000", payload "hello world") and
// the examples of docs/protocol.md; every one decodes and encodes back to the same bytes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { decodeClient, decodeServer, encodeClient, encodeServer, DecodeError, newMsgId } from "../dist/index.js";

const hex = (s) => Uint8Array.from(s.trim().split(/\s+/).map((b) => parseInt(b, 16)));
const ascii = (s) => [...new TextEncoder().encode(s)];
const u8 = (...parts) => Uint8Array.from(parts.flat());
const ID = "550e8400e29b41d4a716446655440000";
const HELLO = ascii("hello world");

function roundTripClient(bytes, expected) {
  const p = decodeClient(bytes);
  assert.deepEqual(p, expected);
  assert.deepEqual(encodeClient(p), bytes);
}

function roundTripServer(bytes, expected) {
  const p = decodeServer(bytes);
  assert.deepEqual(p, expected);
  assert.deepEqual(encodeServer(p), bytes);
}

test("the original description's examples", () => {
  // CONNECT: username "test", password "123456", role 1.
  roundTripClient(u8(1, 0, 4, ascii("test"), 0, 6, ascii("123456"), 1), {
    type: "connect", username: "test", password: "123456", role: 1,
  });
  // PUBLISH to 1234 (0x04d2) and its PUB_ACK.
  roundTripClient(u8(3, 0, 0, 4, 0xd2, ascii(ID), 0, 0x0b, HELLO), {
    type: "publish", to: 1234, id: ID, payload: Uint8Array.from(HELLO),
  });
  roundTripClient(u8(4, ascii(ID)), { type: "pubAck", id: ID });
  // GROUP_PUBLISH to group 1234 and GROUP_PUB_ACK.
  roundTripClient(u8(5, 0, 0, 4, 0xd2, ascii(ID), 0, 0x0b, HELLO), {
    type: "groupPublish", group: 1234, id: ID, payload: Uint8Array.from(HELLO),
  });
  roundTripClient(u8(6, ascii(ID)), { type: "groupPubAck", id: ID });
  // GROUP_PART_PUBLISH to 1234 and 1235 in group 1234. The description draws the count as
  // one byte (0x02) but defines it as 16 bits, as every client sends it.
  roundTripClient(u8(0x0b, 0, 0, 4, 0xd2, ascii(ID), 0, 2, 0, 0, 4, 0xd2, 0, 0, 4, 0xd3, 0, 0x0b, HELLO), {
    type: "partPublish", group: 1234, id: ID, targets: [1234, 1235], payload: Uint8Array.from(HELLO),
  });
  roundTripClient(u8(0x0c, ascii(ID)), { type: "partPubAck", id: ID });
  roundTripClient(u8(9), { type: "disconnect" });
  roundTripServer(u8(7), { type: "ping" });
  roundTripClient(u8(8), { type: "pingResp" });
  // The server's push of the same PUBLISH and the pushes' group layouts.
  roundTripServer(u8(3, ascii(ID), 0, 0x0b, HELLO), { type: "push", id: ID, payload: Uint8Array.from(HELLO) });
  roundTripServer(u8(5, 0, 0, 4, 0xd2, ascii(ID), 0, 0x0b, HELLO), {
    type: "groupPush", group: 1234, id: ID, payload: Uint8Array.from(HELLO),
  });
});

test("docs/protocol.md examples", () => {
  const id = "0123456789abcdef0123456789abcdef";
  roundTripClient(hex("01 00 02 34 32 00 06 73 65 63 72 65 74 00 01"), {
    type: "connect", username: "42", password: "secret", role: 0, flags: 1,
  });
  roundTripServer(hex("02 00"), { type: "connectAck", code: 0 });
  roundTripClient(u8(3, 0, 0, 0, 0x2b, ascii(id), 0, 2, ascii("hi")), {
    type: "publish", to: 43, id, payload: Uint8Array.from(ascii("hi")),
  });
  const envelope = '{"from":"42","to":"43","role":"0","content":"hi"}';
  roundTripServer(u8(3, ascii(id), 0, 0x31, ascii(envelope)), { type: "push", id, payload: Uint8Array.from(ascii(envelope)) });
  roundTripServer(u8(0x0d, ascii(id), 0, 0, 4, 0xb3), { type: "pubErr", id, code: 1203 });
  roundTripServer(hex("14"), { type: "logout" });
  roundTripServer(hex("0a"), { type: "invalidPacket" });
  roundTripServer(hex("09"), { type: "disconnect" });
});

test("invalid bytes are DecodeErrors, never a crash", () => {
  const bad = [
    [],
    [99],
    [2],
    [2, 0, 0],
    [3, ...ascii(ID)],
    [3, ...ascii(ID), 0, 5, 1],
    [0x0b, 0, 0, 0, 1, ...ascii(ID), 0xff, 0xff],
    [0x0d, ...ascii(ID), 0, 0],
    [20, 0],
  ];
  for (const b of bad) assert.throws(() => decodeServer(Uint8Array.from(b)), DecodeError, JSON.stringify(b));
  // Random bytes: only DecodeErrors.
  for (let i = 0; i < 20000; i++) {
    const b = new Uint8Array(Math.floor(Math.random() * 60));
    crypto.getRandomValues(b);
    if (Math.random() < 0.5 && b.length) b[0] = [2, 3, 4, 5, 6, 11, 12, 13][i % 8];
    try {
      decodeServer(b);
    } catch (e) {
      assert.ok(e instanceof DecodeError, String(e));
    }
  }
});

test("encoders refuse what does not fit", () => {
  assert.throws(() => encodeClient({ type: "publish", to: 1, id: "short", payload: new Uint8Array() }), RangeError);
  assert.throws(() => encodeClient({ type: "publish", to: 1, id: ID, payload: new Uint8Array(65536) }), RangeError);
  assert.throws(() => encodeClient({ type: "pubAck", id: "é".repeat(31) + "\u0100" }), RangeError);
  const id = newMsgId();
  assert.match(id, /^[0-9a-f]{32}$/);
  assert.notEqual(id, newMsgId());
});
