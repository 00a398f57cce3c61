// Codec speed in Node: encode a PUBLISH (32-byte payload) and decode the enveloped push the
// recipient gets, per message. Prints ops/s for each, best of 5 rounds of 1,000,000.
// Run: npm run build && npm run bench
import { encodeClient, decodeServer, encodeServer, newMsgId } from "../dist/index.js";

const N = 1_000_000;
const id = newMsgId();
const payload = new TextEncoder().encode("x".repeat(32));
const envelope = new TextEncoder().encode(`{"from":"42","to":"43","role":"0","content":"${"x".repeat(32)}"}`);
const push = encodeServer({ type: "push", id, payload: envelope });

function round(fn) {
  const t = process.hrtime.bigint();
  let sink = 0;
  for (let i = 0; i < N; i++) sink += fn(i);
  const s = Number(process.hrtime.bigint() - t) / 1e9;
  if (sink === -1) console.log(sink);
  return N / s;
}

function best(fn) {
  let b = 0;
  for (let r = 0; r < 5; r++) b = Math.max(b, round(fn));
  return b;
}

const enc = best((i) => encodeClient({ type: "publish", to: i, id, payload }).length);
const dec = best(() => decodeServer(push).payload.length);
const both = best((i) => encodeClient({ type: "publish", to: i, id, payload }).length + decodeServer(push).payload.length);
const fmt = (x) => Math.round(x).toLocaleString("en-US");
console.log(`node ${process.version}`);
console.log(`encode PUBLISH (32-byte payload):     ${fmt(enc)} ops/s`);
console.log(`decode push (81-byte envelope):       ${fmt(dec)} ops/s`);
console.log(`encode + decode, per message:         ${fmt(both)} ops/s`);
