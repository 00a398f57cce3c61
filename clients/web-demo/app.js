// The chat demo: one user per page on the TypeScript client (served at ./imclient/).
// Chat content is the demo's own small JSON ({"t":"text","body","ts"}); a page that shows
// a message answers the sender with a receipt ({"t":"receipt","id"}), which is how the
// sender's page learns "delivered" — the protocol itself acknowledges only to the server.
import { ImClient, newMsgId } from "./imclient/index.js";

const $ = (sel) => document.querySelector(sel);
const state = { uid: 0, client: null, convs: new Map(), current: null, loginAt: 0 };

function storageKey() {
  return `imdemo:${state.uid}`;
}

function save() {
  const convs = [...state.convs.values()].map((c) => ({ ...c, messages: c.messages.slice(-200) }));
  localStorage.setItem(storageKey(), JSON.stringify(convs));
}

function restore() {
  state.convs.clear();
  try {
    for (const c of JSON.parse(localStorage.getItem(storageKey()) ?? "[]")) state.convs.set(c.key, c);
  } catch {
    /* a broken entry: start empty */
  }
}

function conv(key) {
  let c = state.convs.get(key);
  if (!c) {
    const [kind, id] = key.split(":");
    c = { key, kind, id: Number(id), title: kind === "g" ? `Group ${id}` : `User ${id}`, messages: [], unread: 0 };
    state.convs.set(key, c);
  }
  return c;
}

function setStatus(s, text) {
  const el = $("#status");
  el.dataset.state = s;
  el.textContent = text ?? s;
}

function parseContent(text) {
  try {
    const v = JSON.parse(text);
    if (v && (v.t === "text" || v.t === "receipt")) return v;
  } catch {
    /* plain text from another client */
  }
  return { t: "text", body: text };
}

async function post(path, body) {
  const res = await fetch(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const v = await res.json();
  if (v.errCode !== 0) throw new Error(v.errMsg || `HTTP ${res.status}`);
  return v.data;
}

async function login(uid, transport) {
  $("#login-error").hidden = true;
  state.uid = uid;
  const first = await post("/demo/login", { uid });
  const ep = first.endpoints;
  const secure = transport === "wss" && ep.wss_port;
  const url = secure
    ? `wss://${location.hostname}:${ep.wss_port}${ep.wss_path}`
    : `ws://${location.hostname}:${ep.ws_port}${ep.ws_path}`;
  let token = first.token;
  const client = new ImClient({
    url,
    uid,
    // A fresh token for every reconnect; the first one is already here.
    token: async () => {
      const t = token ?? (await post("/demo/login", { uid })).token;
      token = undefined;
      return t;
    },
  });
  state.client = client;
  restore();
  client.on("message", onMessage);
  client.on("connected", ({ reconnect }) => setStatus("connected", reconnect ? "connected (again)" : "connected"));
  client.on("disconnected", ({ reason }) => setStatus("reconnecting", `reconnecting… (${reason})`));
  client.on("loggedOut", () => {
    setStatus("logged-out", "logged out");
    const b = $("#banner");
    b.innerHTML = "";
    b.append(`Logged out: uid ${uid} logged in somewhere else.`);
    const again = document.createElement("button");
    again.textContent = "Log in here again";
    again.onclick = () => location.reload();
    b.append(again);
    b.hidden = false;
    $("#text").disabled = $("#send").disabled = true;
  });
  client.on("stopped", ({ error }) => {
    if ($("#status").dataset.state !== "logged-out") setStatus("stopped", error ? `stopped: ${error.message}` : "stopped");
  });
  state.loginAt = Date.now();
  setStatus("connecting", "connecting…");
  await client.connect();
  history.replaceState(null, "", `#uid=${uid}&transport=${secure ? "wss" : "ws"}`);
  $("#me").textContent = `uid ${uid} over ${secure ? "wss" : "ws"}`;
  $("#login").hidden = true;
  $("#chat").hidden = false;
  renderConversations();
  if (state.convs.size) select([...state.convs.keys()][0]);
}

function onMessage(m) {
  const content = parseContent(m.text);
  const from = m.sender ?? 0;
  if (content.t === "receipt") {
    for (const c of state.convs.values()) {
      const mine = c.messages.find((x) => x.id === content.id && x.mine);
      if (mine) {
        mine.delivered = [...new Set([...(mine.delivered ?? []), from])];
        mine.state = "delivered";
      }
    }
    save();
    return renderMessages();
  }
  const key = m.kind === "direct" ? `u:${from}` : `g:${m.group}`;
  const c = conv(key);
  if (!c.messages.some((x) => x.id === m.id)) {
    c.messages.push({
      id: m.id,
      from,
      text: content.body,
      ts: content.ts ?? Date.now(),
      mine: false,
      offline: content.ts !== undefined && content.ts < state.loginAt,
    });
    if (state.current !== key) c.unread += 1;
    save();
  }
  // Tell the sender it arrived.
  if (from !== 0) state.client.send(from, JSON.stringify({ t: "receipt", id: m.id })).catch(() => {});
  renderConversations();
  renderMessages();
}

function renderConversations() {
  const ul = $("#conversations");
  ul.innerHTML = "";
  for (const c of state.convs.values()) {
    const li = document.createElement("li");
    li.dataset.key = c.key;
    li.className = c.key === state.current ? "active" : "";
    li.append(c.title);
    if (c.unread) {
      const badge = document.createElement("span");
      badge.className = "unread";
      badge.textContent = String(c.unread);
      li.append(badge);
    }
    li.onclick = () => select(c.key);
    ul.append(li);
  }
}

const LABEL = { sending: "sending", sent: "sent", acked: "✓ server", delivered: "✓✓ delivered" };

function renderMessages() {
  const ol = $("#messages");
  ol.innerHTML = "";
  const c = state.current && state.convs.get(state.current);
  if (!c) return;
  for (const m of c.messages) {
    const li = document.createElement("li");
    li.className = m.mine ? "mine" : "";
    li.dataset.id = m.id;
    if (m.mine) li.dataset.state = m.state;
    const text = document.createElement("div");
    text.className = "text";
    text.textContent = m.text;
    const meta = document.createElement("div");
    meta.className = "meta";
    const who = m.mine ? "you" : `uid ${m.from}`;
    meta.append(`${who} · ${new Date(m.ts).toLocaleTimeString()}`);
    const extra = document.createElement("span");
    if (m.mine) {
      extra.className = "state";
      extra.textContent = m.state === "delivered" && c.kind === "g" ? `${LABEL.delivered} (${m.delivered.length})` : (LABEL[m.state] ?? m.state);
    } else if (m.offline) {
      extra.className = "offline";
      extra.textContent = "arrived while you were offline";
    }
    meta.append(extra);
    li.append(text, meta);
    ol.append(li);
  }
  ol.scrollTop = ol.scrollHeight;
}

function select(key) {
  state.current = key;
  const c = conv(key);
  c.unread = 0;
  $("#title").textContent = c.title;
  $("#text").disabled = $("#send").disabled = false;
  $("#text").focus();
  save();
  renderConversations();
  renderMessages();
}

async function send(text) {
  const c = state.convs.get(state.current);
  if (!c || !text) return;
  const id = newMsgId();
  const msg = { id, from: state.uid, text, ts: Date.now(), mine: true, state: "sending", delivered: [] };
  c.messages.push(msg);
  const body = JSON.stringify({ t: "text", body: text, ts: msg.ts });
  const p = c.kind === "g" ? state.client.sendGroup(c.id, body, id) : state.client.send(c.id, body, id);
  if (state.client.connected) msg.state = "sent";
  renderMessages();
  try {
    await p;
    if (msg.state !== "delivered") msg.state = "acked";
  } catch (e) {
    msg.state = `failed: ${e.message}`;
  }
  save();
  renderMessages();
}

$("#login-form").onsubmit = (e) => {
  e.preventDefault();
  login(Number($("#uid").value), $("#transport").value).catch((err) => {
    $("#login-error").textContent = `Could not log in: ${err.message}`;
    $("#login-error").hidden = false;
    setStatus("offline");
  });
};
$("#new-chat").onsubmit = (e) => {
  e.preventDefault();
  select(`u:${Number($("#peer").value)}`);
  $("#peer").value = "";
};
$("#join-group").onsubmit = async (e) => {
  e.preventDefault();
  const gid = Number($("#gid").value);
  try {
    const g = await post(`/demo/groups/${gid}/join`, { uid: state.uid });
    conv(`g:${gid}`).title = `Group ${gid}`;
    $("#title").title = `${g.members.length} members`;
    select(`g:${gid}`);
    $("#gid").value = "";
  } catch (err) {
    alert(`Could not join: ${err.message}`);
  }
};
$("#composer").onsubmit = (e) => {
  e.preventDefault();
  const text = $("#text").value.trim();
  $("#text").value = "";
  send(text);
};

// #uid=42&transport=ws logs in at once (what a reload does).
const params = new URLSearchParams(location.hash.slice(1));
if (params.get("uid")) {
  $("#uid").value = params.get("uid");
  $("#transport").value = params.get("transport") === "wss" ? "wss" : "ws";
  $("#login-form").requestSubmit();
}
