// The demo page in a real browser (Debian's chromium through playwright-core), against the
// real server binary, which this test starts, kills (SIGKILL) and starts again on the same
// port. Three pages: an admin (roles admin,user) and two tabs of the ordinary user alice
// (role user). Each of the design record's three use cases is triggered from a page and shows
// on the right pages only: a notification on every tab of its user, dashboard figures on the
// admin's page, job progress on the one connection that started the job. A notification
// published over HTTP while a tab's socket was down shows there exactly once after it
// reconnects; after the restart every page reconnects by itself. On the Redis broker, history
// survives the restart: a notification published while the server was back and a page's
// socket still down shows there exactly once when it reconnects.
// With REALTIME_WEBSOCKET_COMPRESSION on, Chromium's own permessage-deflate agrees with the
// server (`ws.extensions`), a compressed client message is answered, and a long notification
// reaches the demo page and a second socket whole, compressed once (`/metrics`).
//
// "Only" is checked after a later message on the topic every page subscribes to has
// arrived everywhere: what the server hands a connection arrives in order, so anything sent
// there before (a stray notification, figures, job progress) would have shown first.
//
// Started by crates/realtime-server/tests/it/browser.rs with REALTIME_SERVER_BIN (the server
// binary), REALTIME_TEST_REDIS_URL (a redis-server of the test's own) and SCREENSHOT_DIR
// (where the passing run's screenshots go).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { API_KEY, publish, startServer, token } from "../../../../clients/js/test/server.mjs";

const screenshots = process.env.SCREENSHOT_DIR;
/** A failure bound, never a timing expectation. */
const WAIT = 20_000;
/** The reconnect after a restart: the client's backoff grows while the server is down. */
const RECONNECT_WAIT = 60_000;

const devToken = (sub, roles) => token(sub, { roles, topics: ["demo:*"] });

/** Waits until `page` has `n` elements matching `selector` (whose text includes `text`, if given). */
async function waitCount(page, selector, n, text) {
  await page.waitForFunction(
    ([selector, n, text]) =>
      [...document.querySelectorAll(selector)].filter((el) => text === undefined || el.textContent.includes(text)).length === n,
    [selector, n, text],
    { timeout: WAIT },
  );
}

/** How many elements of `page` match `selector` (and include `text`, if given). */
async function count(page, selector, text) {
  return page.$$eval(selector, (els, text) => els.filter((el) => text === undefined || el.textContent.includes(text)).length, text);
}

const state = (page) => page.getAttribute("#status", "data-state");
const text = (page, selector) => page.textContent(selector);

/** Clicks the demo button of `action` on `page` and waits for the server's ack, returning its text. */
async function demo(page, action) {
  const id = `r-demo.${action}`;
  await page.evaluate((id) => (document.getElementById(id).textContent = ""), id);
  await page.click(`button[data-demo="demo.${action}"]`);
  await page.waitForFunction((id) => !["", "sent..."].includes(document.getElementById(id).textContent), id, { timeout: WAIT });
  return page.textContent(`[id="${id}"]`);
}

async function waitConnected(page, timeout = WAIT) {
  await page.waitForFunction(
    () =>
      document.getElementById("status").dataset.state === "connected" &&
      document.getElementById("topic-state").textContent === "subscribed",
    null,
    { timeout },
  );
}

/**
 * Publishes on the topic from `from` and waits until every page shows it: whatever the
 * server sent any of them before has arrived by then.
 */
async function barrier(from, pages) {
  const before = await Promise.all(pages.map((page) => count(page, "#news li")));
  await from.click('button[data-demo="demo.topic"]');
  await Promise.all(pages.map((page, i) => waitCount(page, "#news li", before[i] + 1)));
}

/** Chromium with a fresh profile, and `open(name, token)` for pages of `server`'s demo. */
async function launch(server) {
  const profile = mkdtempSync(join(tmpdir(), "realtime-chromium-"));
  // A fresh profile directory for every run (playwright's form of --user-data-dir).
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1280, height: 1000 },
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  const session = { errors: [], pages: [] };
  session.open = async (name, tokenText) => {
    const page = await browser.newPage();
    page.on("pageerror", (e) => session.errors.push(`${name}: ${e}`));
    page.name = name;
    session.pages.push(page);
    await page.goto(`${server.base}/?token=${tokenText}`);
    return page;
  };
  /** What each page saw, to tell why `error` happened. */
  session.explain = async (error) => {
    const logs = [];
    for (const page of session.pages) {
      const frames = await page.textContent("#log").catch(() => "<no log>");
      logs.push(`--- ${page.name}'s frame log (newest first):\n${frames}`);
    }
    return new Error(`${error.message}\n${session.errors.join("\n")}\n${logs.join("\n")}`, { cause: error });
  };
  session.close = async () => {
    await browser.close();
    rmSync(profile, { recursive: true, force: true });
  };
  return session;
}

/** Waits until `page` has reconnected: a connection id other than `old`, the topic subscribed. */
async function waitReconnected(page, old) {
  await page.waitForFunction((old) => document.getElementById("cid").textContent !== old, old, { timeout: RECONNECT_WAIT });
  await waitConnected(page, RECONNECT_WAIT);
}

test("an admin and a user see the three use cases, recover what they missed, and survive a server restart", async () => {
  const server = await startServer({ env: { REALTIME_DEMO: "true" } });
  const session = await launch(server);
  const { errors, open, pages } = session;
  try {
    const admin = await open("admin", devToken("admin", ["admin", "user"]));
    const alice = await open("alice", devToken("alice", ["user"]));
    const aliceTab2 = await open("alice (second tab)", devToken("alice", ["user"]));
    for (const page of pages) await waitConnected(page);
    assert.equal(await text(admin, "#roles"), "admin, user");
    assert.equal(await text(alice, "#roles"), "user");

    // 1. A notification for alice: both of her tabs, not the admin.
    assert.equal(await demo(alice, "notify"), "delivered to 2 connections");
    await waitCount(alice, "#notes li", 1, "Demo notification");
    await waitCount(aliceTab2, "#notes li", 1, "Demo notification");
    await barrier(admin, pages);
    assert.equal(await count(admin, "#notes li"), 0, "the admin got alice's notification");
    assert.equal(await count(alice, "#notes li"), 1);

    // 2. Dashboard figures to role admin, published from alice's page: the admin's page only.
    assert.equal(await demo(alice, "metrics"), "delivered to 1 connection");
    await admin.waitForFunction(() => document.getElementById("m-seq").textContent !== "-", null, { timeout: WAIT });
    const firstFigures = await text(admin, "#m-seq");
    assert.equal(await demo(admin, "metrics"), "delivered to 1 connection");
    await admin.waitForFunction((first) => document.getElementById("m-seq").textContent !== first, firstFigures, { timeout: WAIT });
    await barrier(alice, pages);
    for (const page of [alice, aliceTab2]) {
      assert.equal(await text(page, "#m-seq"), "-", `${page.name} got the admins' figures`);
    }

    // 3. Job progress to one connection: alice's first tab starts a job, and so does the
    // admin; each sees its own to the end, alice's second tab sees none.
    assert.equal(await demo(alice, "job"), "delivered to 1 connection");
    assert.equal(await demo(admin, "job"), "delivered to 1 connection");
    for (const page of [alice, admin]) {
      await page.waitForFunction(() => document.getElementById("job").textContent.includes("100% Done"), null, { timeout: WAIT });
    }
    const aliceJob = (await text(alice, "#job")).split(":")[0];
    const adminJob = (await text(admin, "#job")).split(":")[0];
    assert.notEqual(aliceJob, adminJob);
    await barrier(admin, pages);
    assert.equal(await text(aliceTab2, "#job"), "no job yet", "the second tab got another connection's job");

    // Offline with the server up: alice's first tab drops its socket, a notification is
    // published over HTTP meanwhile (her second tab is the only connection it reaches), and
    // after the reconnect it shows there exactly once.
    await alice.click("#drop");
    await alice.waitForFunction(() => document.getElementById("status").dataset.state === "offline", null, { timeout: WAIT });
    const missed = "Published over HTTP while the first tab was offline";
    const answer = await publish(server, { user: "alice" }, "notification", { message: missed });
    assert.equal(answer.delivered, 1, `only the second tab was connected: ${JSON.stringify(answer)}`);
    await waitCount(aliceTab2, "#notes li", 1, missed);
    assert.equal(await count(alice, "#notes li", missed), 0, "it arrived while offline");
    await alice.click("#drop"); // now "Reconnect"
    await waitConnected(alice);
    await waitCount(alice, "#notes li", 1, missed);
    assert.match(await text(alice, "#recovered"), /user:alice yes/);
    // A later message on the same stream: a duplicate would have come before it.
    const after = "Published after the reconnect";
    await publish(server, { user: "alice" }, "notification", { message: after });
    for (const page of [alice, aliceTab2]) {
      await waitCount(page, "#notes li", 1, after);
      assert.equal(await count(page, "#notes li", missed), 1, `${page.name}: exactly once`);
    }

    // The page's own control: three notifications sent while it keeps its socket closed
    // for 4 s; each once, in order (the last one arrives after the reconnect).
    const connects = Number(await text(alice, "#reconnects"));
    await alice.click("#notify-later");
    await alice.waitForFunction((n) => Number(document.getElementById("reconnects").textContent) > n, connects, { timeout: WAIT });
    await waitConnected(alice);
    await waitCount(alice, "#notes li", 3, "Sent while you were offline");
    const closing = "Published after the three";
    await publish(server, { user: "alice" }, "notification", { message: closing });
    for (const page of [alice, aliceTab2]) {
      await waitCount(page, "#notes li", 1, closing);
      // Newest first in the list: read it back in arrival order.
      const notes = (await page.$$eval("#notes li", (items) => items.map((li) => li.textContent)))
        .reverse()
        .filter((note) => note.startsWith("Sent while you were offline"));
      assert.equal(notes.length, 3, `${page.name}, each once: ${JSON.stringify(notes)}`);
      notes.forEach((note, i) => assert.ok(note.startsWith(`Sent while you were offline (${i + 1} of 3`), `in order: ${JSON.stringify(notes)}`));
    }
    assert.equal(await count(admin, "#notes li"), 0);

    if (screenshots) {
      await admin.screenshot({ path: join(screenshots, "demo-admin.png"), fullPage: true });
      await alice.screenshot({ path: join(screenshots, "demo-user.png"), fullPage: true });
    }

    // The server is killed and started again on the same port: every page reconnects by
    // itself (a new connection id), resubscribes the topic, and works as before. The
    // in-memory broker lost its history with the process, and the pages say so.
    const before = await Promise.all(pages.map((page) => text(page, "#cid")));
    await server.restart();
    for (const [i, page] of pages.entries()) {
      await waitReconnected(page, before[i]);
      assert.match(await text(page, "#recovered"), /user:\w+ no \(history lost\)/, page.name);
    }
    assert.equal(await demo(alice, "notify"), "delivered to 2 connections");
    await waitCount(aliceTab2, "#notes li", 2, "Demo notification");
    await waitCount(alice, "#notes li", 2, "Demo notification");
    await admin.evaluate(() => (document.getElementById("m-seq").textContent = "-"));
    assert.equal(await demo(alice, "metrics"), "delivered to 1 connection");
    await admin.waitForFunction(() => document.getElementById("m-seq").textContent !== "-", null, { timeout: WAIT });
    assert.equal(await text(admin, "#m-active"), "3", "every page is connected again");
    await barrier(admin, pages);
    assert.equal(await count(admin, "#notes li"), 0);
    assert.equal(await text(aliceTab2, "#m-seq"), "-");
    if (screenshots) await alice.screenshot({ path: join(screenshots, "demo-after-restart.png"), fullPage: true });

    assert.deepEqual(errors, [], "no script errors");
    for (const page of pages) assert.equal(await state(page), "connected", page.name);
  } catch (error) {
    throw await session.explain(error);
  } finally {
    await session.close();
    await server.stop();
  }
});

test("on the Redis broker, a notification published while a page's socket was down, across a server restart, appears once after it reconnects", async () => {
  const redisUrl = process.env.REALTIME_TEST_REDIS_URL;
  assert.ok(redisUrl, "REALTIME_TEST_REDIS_URL names the test's own redis-server (browser.rs starts one)");
  const server = await startServer({
    env: { REALTIME_DEMO: "true", REALTIME_BROKER: "redis", REALTIME_REDIS_URL: redisUrl, REALTIME_REDIS_PREFIX: `demo-browser-${process.pid}` },
  });
  const session = await launch(server);
  try {
    const admin = await session.open("admin", devToken("admin", ["admin", "user"]));
    const alice = await session.open("alice", devToken("alice", ["user"]));
    for (const page of session.pages) await waitConnected(page);
    // Both streams get a position before the restart. (The Redis broker delivers through
    // pub/sub, after the publish has answered: its `delivered` is 0, so it is not checked.)
    await demo(alice, "notify");
    await waitCount(alice, "#notes li", 1, "Demo notification");
    await demo(alice, "metrics");
    await admin.waitForFunction(() => document.getElementById("m-seq").textContent !== "-", null, { timeout: WAIT });

    // Alice's page drops its socket; the server is killed and started again; while her page
    // is still down, a notification for her and figures for the admins are published.
    await alice.click("#drop");
    await alice.waitForFunction(() => document.getElementById("status").dataset.state === "offline", null, { timeout: WAIT });
    const adminBefore = await text(admin, "#cid");
    await server.restart();
    const missed = "Published after the restart while alice's socket was down";
    await publish(server, { user: "alice" }, "notification", { message: missed });
    await publish(server, { role: "admin" }, "metrics", { active_connections: "-", orders_today: 99, sequence: 1000 });

    // The admin's page reconnects by itself and gets the figures (from Redis history or
    // live, depending on when it came back): the role's stream survived the restart.
    await waitReconnected(admin, adminBefore);
    await admin.waitForFunction(() => document.getElementById("m-seq").textContent === "1000", null, { timeout: WAIT });
    assert.match(await text(admin, "#recovered"), /role:admin yes/);

    // Alice's page held itself offline all along (its client waits for the page's go-ahead
    // before it reconnects); it comes back and shows what was published meanwhile, once.
    assert.equal(await state(alice), "offline");
    assert.equal(await count(alice, "#notes li", missed), 0);
    await alice.click("#drop"); // now "Reconnect"
    await waitConnected(alice);
    await waitCount(alice, "#notes li", 1, missed);
    assert.match(await text(alice, "#recovered"), /user:alice yes/);
    const after = "Published after alice's page came back";
    await publish(server, { user: "alice" }, "notification", { message: after });
    await waitCount(alice, "#notes li", 1, after);
    assert.equal(await count(alice, "#notes li", missed), 1, "exactly once");
    assert.equal(await count(alice, "#notes li"), 3, "nothing else, nothing twice");
    if (screenshots) await alice.screenshot({ path: join(screenshots, "demo-after-restart-redis.png"), fullPage: true });
    assert.deepEqual(session.errors, [], "no script errors");
  } catch (error) {
    throw await session.explain(error);
  } finally {
    await session.close();
    await server.stop();
  }
});

/** A counter's value in the server's `/metrics` (0 when it was never incremented). */
async function counter(server, series) {
  const response = await fetch(`${server.base}/metrics`, { headers: { Authorization: `Bearer ${API_KEY}` } });
  const line = (await response.text()).split("\n").find((l) => l.startsWith(`${series} `));
  return line ? Number(line.split(" ")[1]) : 0;
}

test("with compression on, Chromium agrees to permessage-deflate, and the demo page and a socket of its own read compressed frames", async () => {
  const server = await startServer({ env: { REALTIME_DEMO: "true", REALTIME_WEBSOCKET_COMPRESSION: "true" } });
  const session = await launch(server);
  try {
    const carolToken = devToken("carol", ["user"]);
    const carol = await session.open("carol", carolToken);
    await waitConnected(carol);
    // A socket of the page's own, beside the demo's client: what Chromium agreed to, and
    // a compressed client message (Chromium compresses what it sends) answered.
    const agreed = await carol.evaluate(
      ({ url, jwt }) =>
        new Promise((resolve, reject) => {
          const ws = new WebSocket(url, ["realtime.v1", `bearer.${jwt}`]);
          const seen = [];
          ws.onerror = () => reject(new Error("socket error"));
          ws.onmessage = (event) => {
            const frame = JSON.parse(event.data);
            seen.push(frame.type);
            if (frame.type === "connected") ws.send(JSON.stringify({ type: "ping", id: "c1" }));
            if (frame.type === "pong" && frame.id === "c1") {
              window.ownSocket = ws;
              window.ownFrames = [];
              ws.onmessage = (e) => window.ownFrames.push(e.data);
              resolve({ extensions: ws.extensions, seen });
            }
          };
        }),
      { url: server.wsUrl, jwt: carolToken },
    );
    assert.equal(agreed.extensions, "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
    assert.deepEqual(agreed.seen, ["connected", "pong"]);

    // A notification of about 1.5 KiB: compressed once for carol's two sockets.
    const long = `Compressed notification: ${"the quick brown fox jumps over the lazy dog; ".repeat(32)}end.`;
    const before = await counter(server, "realtime_frames_compressed_total");
    const receipt = await publish(server, { user: "carol" }, "notification", { message: long });
    assert.equal(receipt.delivered, 2);
    await waitCount(carol, "#notes li", 1, "end.");
    assert.ok((await text(carol, "#notes")).includes(long), "the demo page shows it whole");
    await carol.waitForFunction(() => window.ownFrames.length === 1, null, { timeout: WAIT });
    const own = JSON.parse(await carol.evaluate(() => window.ownFrames[0]));
    assert.equal(own.payload.message, long);
    assert.equal((await counter(server, "realtime_frames_compressed_total")) - before, 1, "compressed once");
    assert.deepEqual(session.errors, [], "no script errors");
  } catch (error) {
    throw await session.explain(error);
  } finally {
    await session.close();
    await server.stop();
  }
});
