// The demo in a real browser: headless Chromium (Debian's package, CHROMIUM to override)
// driven by puppeteer-core, against the real server with the demo on. Two pages are two
// users: 1:1 over ws and wss with message states up to "delivered", a group, a page that
// reloads and gets what it missed, and a login elsewhere logging a page out. Screenshots go
// to SCREENSHOTS (default target/browser-test/).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import puppeteer from "puppeteer-core";
import { Server } from "../../js/test/server.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const SHOTS = process.env.SCREENSHOTS ?? join(here, "../../../target/browser-test");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
// Poll on a timer: a page not in front gets no animation frames.
const POLL = { polling: 50, timeout: 10000 };

let srv;
let browser;
before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  srv = await Server.start({ IMSERVER_DEMO__ENABLED: "true" });
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      // Two pages at once: keep the one not in front running.
      "--disable-background-timer-throttling",
      "--disable-renderer-backgrounding",
      "--disable-backgrounding-occluded-windows",
      // The test server's certificate is self-signed (wss).
      "--ignore-certificate-errors",
    ],
  });
});
after(async () => {
  await browser?.close();
  await srv?.stop();
});

async function open(uid, transport) {
  const page = await browser.newPage();
  await page.setViewport({ width: 900, height: 640 });
  page.on("pageerror", (e) => console.error(`page ${uid}:`, e));
  await page.goto(`http://127.0.0.1:${srv.httpPort}/demo/#uid=${uid}&transport=${transport}`);
  await page.waitForSelector('#status[data-state="connected"]', { timeout: 10000 });
  return page;
}

async function openConversation(page, peer) {
  await page.bringToFront(); // input events need the page in front
  await page.type("#peer", String(peer));
  await page.click("#new-chat button");
  await page.waitForFunction((t) => document.querySelector("#title").textContent === t, POLL, `User ${peer}`);
}

async function say(page, text) {
  await page.bringToFront();
  await page.type("#text", text);
  await page.click("#send");
}

/** Waits until a message with `text` is shown; returns its state attribute (own messages). */
async function shown(page, text, st) {
  await page.waitForFunction(
    (text, st) =>
      [...document.querySelectorAll("#messages li")].some(
        (li) => li.querySelector(".text").textContent === text && (!st || li.dataset.state === st),
      ),
    POLL,
    text,
    st,
  );
}

async function snap(page, name) {
  await page.bringToFront(); // a page not in front renders no frame to capture
  await page.screenshot({ path: join(SHOTS, name) });
}

async function openFrom(page, key) {
  await page.bringToFront();
  await page.waitForSelector(`#conversations li[data-key="${key}"]`, { timeout: 10000 });
  await page.click(`#conversations li[data-key="${key}"]`);
}

test("two users chat, 1:1 and in a group, through a reload and a kick", async () => {
  const alice = await open(1001, "ws");
  const bob = await open(1002, "wss");
  assert.match(await bob.$eval("#me", (e) => e.textContent), /over wss/);

  // 1:1: alice's message reaches bob; alice sees it acknowledged, then delivered.
  await openConversation(alice, 1002);
  await say(alice, "Hi Bob, over ws");
  await openFrom(bob, "u:1001");
  await shown(bob, "Hi Bob, over ws");
  await shown(alice, "Hi Bob, over ws", "delivered");
  await say(bob, "Hi Alice, over wss");
  await shown(alice, "Hi Alice, over wss");
  await shown(bob, "Hi Alice, over wss", "delivered");
  await snap(alice, "1-alice-1to1.png");
  await snap(bob, "2-bob-1to1.png");

  // A group both join.
  for (const p of [alice, bob]) {
    await p.bringToFront();
    await p.type("#gid", "555");
    await p.click("#join-group button");
    await p.waitForFunction(() => document.querySelector("#title").textContent.startsWith("Group 555"), POLL);
  }
  await say(alice, "Hello group 555");
  await shown(bob, "Hello group 555");
  await shown(alice, "Hello group 555", "delivered");
  await say(bob, "Bob in the group");
  await shown(alice, "Bob in the group");
  await snap(bob, "3-bob-group.png");

  // Bob leaves the page; alice writes; bob comes back and gets it, marked as missed.
  await bob.goto("about:blank");
  await openFrom(alice, "u:1002");
  await say(alice, "Sent while you were away");
  await shown(alice, "Sent while you were away", "acked");
  await bob.goto(`http://127.0.0.1:${srv.httpPort}/demo/#uid=1002&transport=wss`);
  await bob.waitForSelector('#status[data-state="connected"]');
  await openFrom(bob, "u:1001");
  await shown(bob, "Sent while you were away");
  await bob.waitForFunction(() => document.querySelector("#messages .offline")?.textContent.includes("offline"), POLL);
  await shown(bob, "Hi Bob, over ws"); // kept from before the reload
  await shown(alice, "Sent while you were away", "delivered");
  await snap(bob, "4-bob-after-reload.png");

  // Alice logs in on another page: the first one is logged out, and says so.
  const alice2 = await open(1001, "ws");
  await alice.waitForSelector('#status[data-state="logged-out"]', { timeout: 10000 });
  const banner = await alice.$eval("#banner", (e) => e.textContent);
  assert.match(banner, /logged in somewhere else/);
  await snap(alice, "5-alice-logged-out.png");
  await alice2.close();
});

test("the demo is off by default", async () => {
  const plain = await Server.start({});
  try {
    const res = await fetch(`http://127.0.0.1:${plain.httpPort}/demo/login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ uid: 1 }),
    });
    assert.equal(res.status, 404);
    assert.equal((await fetch(`http://127.0.0.1:${plain.httpPort}/demo/`)).status, 404);
  } finally {
    await plain.stop();
  }
});
