// ImClient against the real server (started per test file): ws and wss, groups and
// refusals, offline messages, sends across cut connections, a held message across a
// reconnect handed over once, logout by a second login, bad credentials.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { ImClient, ConnectError, SendError } from "../dist/index.js";
import { Server, Forwarder, next, collect, sleep, within } from "./server.mjs";

let srv;
before(async () => {
  srv = await Server.start({ IMSERVER_DELIVERY__REDELIVERY_INTERVAL_MS: "300" });
});
after(async () => srv.stop());

async function client(uid, opts = {}) {
  const c = new ImClient({
    url: srv.ws,
    uid,
    token: () => srv.token(uid),
    webSocket: srv.factory,
    backoffInitialMs: 50,
    backoffMaxMs: 500,
    ...opts,
  });
  await c.connect();
  return c;
}

/** Asserts that `c` receives no message for `ms`. */
async function quiet(c, ms) {
  const seen = [];
  const off = c.on("message", (m) => seen.push(m.text));
  await sleep(ms);
  off();
  assert.deepEqual(seen, []);
}

test("1:1 over ws and wss, acknowledged automatically", async () => {
  for (const [i, url] of [srv.ws, srv.wss].entries()) {
    const a = await client(100 + 2 * i, { url });
    const b = await client(101 + 2 * i, { url });
    const got = next(b, "message");
    const id = await a.send(b.uid, `over ${url}`);
    const m = await got;
    assert.equal(m.id, id);
    assert.equal(m.kind, "direct");
    assert.equal(m.sender, a.uid);
    assert.equal(m.text, `over ${url}`);
    await quiet(b, 800); // acknowledged: not redelivered
    a.close();
    b.close();
  }
});

test("groups, part groups and refusals", async () => {
  await srv.api("POST", "/groups", { gid: 7, members: [110, 111, 112] });
  const [a, b, c, outsider] = await Promise.all([110, 111, 112, 113].map((u) => client(u)));
  const both = Promise.all([next(b, "message"), next(c, "message")]);
  const id = await a.sendGroup(7, "hello group");
  for (const m of await both) {
    assert.deepEqual([m.id, m.kind, m.group, m.sender, m.text], [id, "group", 7, 110, "hello group"]);
  }
  const part = next(c, "message");
  await a.sendPart(7, [112], "just 112");
  const m = await part;
  assert.deepEqual([m.kind, m.targets, m.text], ["part", [112], "just 112"]);
  await assert.rejects(outsider.sendGroup(7, "let me in"), (e) => e instanceof SendError && e.code === 1203);
  await assert.rejects(a.send(0, "nobody"), (e) => e instanceof SendError && e.code === 1101);
  await assert.rejects(a.sendPart(7, [], "x"), (e) => e instanceof SendError && e.reason === "invalid");
  await quiet(b, 300);
  for (const x of [a, b, c, outsider]) x.close();
});

test("offline messages arrive in order at the next login", async () => {
  const a = await client(120);
  for (let i = 0; i < 30; i++) await a.send(121, `off ${i}`);
  const b = new ImClient({ url: srv.ws, uid: 121, token: await srv.token(121), webSocket: srv.factory });
  const all = collect(b, 30);
  await b.connect();
  assert.deepEqual((await all).map((m) => m.text), Array.from({ length: 30 }, (_, i) => `off ${i}`));
  a.close();
  b.close();
});

test("sends survive cut connections and arrive once", async () => {
  const fwd = await Forwarder.start(srv.wsPort);
  const a = await client(130, { url: `ws://127.0.0.1:${fwd.port}/ws` });
  const b = await client(131);
  const ids = new Set();
  const received = new Map();
  b.on("message", (m) => received.set(m.id, (received.get(m.id) ?? 0) + 1));
  let reconnects = 0;
  a.on("connected", ({ reconnect }) => (reconnects += reconnect ? 1 : 0));
  const sends = [];
  for (let burst = 0; burst < 3; burst++) {
    for (let i = 0; i < 100; i++) sends.push(a.send(131, `m${burst}-${i}`));
    // Cut before the forwarder (in this process) read any of it, one loop turn later, 2 ms later.
    if (burst === 1) await new Promise((r) => setImmediate(r));
    if (burst === 2) await sleep(2);
    fwd.cut();
    await next(a, "connected");
  }
  for (const id of await within(Promise.all(sends), 20000, "every send answered")) ids.add(id);
  assert.equal(ids.size, 300);
  for (let t = 0; t < 100 && received.size < 300; t++) await sleep(100);
  await sleep(800);
  assert.equal(received.size, 300, "every message arrived");
  assert.ok([...received.values()].every((n) => n === 1), "each handed over once");
  assert.ok(reconnects >= 1, "the sender reconnected");
  a.close();
  b.close();
  fwd.close();
});

test("a held message is handed over once across a reconnect and acknowledged late", async () => {
  const fwd = await Forwarder.start(srv.wsPort);
  const a = await client(140);
  const b = await client(141, { url: `ws://127.0.0.1:${fwd.port}/ws`, autoAck: false });
  const seen = [];
  b.on("message", (m) => seen.push(m));
  const first = await a.send(141, "first");
  while (seen.length < 1) await sleep(10);
  fwd.cut();
  await next(b, "connected");
  await a.send(141, "second");
  while (seen.length < 2) await sleep(10);
  await sleep(700); // redeliveries of "first" in this time are dropped
  assert.deepEqual(seen.map((m) => m.text), ["first", "second"]);
  assert.equal(seen[0].id, first);
  for (const m of seen) m.ack();
  await quiet(b, 1000);
  b.close();
  fwd.close();
  await sleep(200);
  const again = await client(141);
  await quiet(again, 800); // acknowledged for real: nothing stored
  again.close();
  a.close();
});

test("a second login logs the first out; bad tokens are refused", async () => {
  const first = await client(150);
  const out = next(first, "loggedOut");
  const stopped = next(first, "stopped");
  const second = await client(150, { url: srv.wss });
  await out;
  await stopped;
  await assert.rejects(first.send(151, "x"), (e) => e instanceof SendError && e.reason === "stopped");
  second.close();
  const bad = new ImClient({ url: srv.ws, uid: 152, token: "nope", webSocket: srv.factory });
  await assert.rejects(bad.connect(), (e) => e instanceof ConnectError && e.code === 3);
});
