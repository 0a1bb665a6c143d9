// The demo page in a real browser (Debian's chromium through playwright-core): it connects,
// shows a topic publication, and after its socket drops (the server stays up) it reconnects
// with `since` and shows the notifications sent meanwhile once each, in order.
//
// Started by crates/realtime-server/tests/it/browser.rs with REALTIME_DEMO_URL (the demo page
// with a token) and SCREENSHOT_DIR.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const url = process.env.REALTIME_DEMO_URL;
const screenshots = process.env.SCREENSHOT_DIR;
const WAIT = 15000;

test("the demo page shows a topic and recovers notifications sent while it was offline", async () => {
  assert.ok(url, "REALTIME_DEMO_URL is set");
  const profile = mkdtempSync(join(tmpdir(), "realtime-chromium-"));
  // A fresh profile directory for every run (playwright's form of --user-data-dir).
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  const page = await browser.newPage();
  try {
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(url);
    await page.waitForFunction(() => document.getElementById("status").textContent === "connected", null, { timeout: WAIT });

    // 4. The topic: the page subscribed on connect; a publication shows up.
    await page.waitForFunction(() => document.getElementById("log").textContent.includes('"type":"subscribed"'), null, { timeout: WAIT });
    await page.click('button[data-demo="demo.topic"]');
    await page.waitForFunction(() => document.querySelectorAll("#news li").length === 1, null, { timeout: WAIT });

    // 5. Offline: the page drops its socket, the server sends three notifications, the page
    // comes back with `since` and shows them.
    await page.click("#offline");
    await page.waitForFunction(() => document.getElementById("status").textContent.startsWith("closed"), null, { timeout: WAIT });
    await page.waitForFunction(() => document.getElementById("status").textContent === "connected", null, { timeout: WAIT });
    await page.waitForFunction(() => document.querySelectorAll("#notes li").length >= 3, null, { timeout: WAIT });
    // Newest first in the list: read it back in arrival order.
    const notes = (await page.$$eval("#notes li", (items) => items.map((li) => li.textContent))).reverse();
    assert.equal(notes.length, 3, `each once: ${JSON.stringify(notes)}`);
    notes.forEach((note, i) => assert.ok(note.startsWith(`Sent while you were offline (${i + 1} of 3`), `in order: ${JSON.stringify(notes)}`));
    const recovered = await page.textContent("#recovered");
    assert.ok(recovered.includes("user:alice yes"), `recovered: ${recovered}`);
    if (screenshots) await page.screenshot({ path: join(screenshots, "demo-recovered.png"), fullPage: true });
    assert.deepEqual(errors, [], "no script errors");
  } catch (error) {
    // What the page saw, to tell why.
    const frames = await page.textContent("#log").catch(() => "<no log>");
    throw new Error(`${error.message}\nthe page's frame log (newest first):\n${frames}`);
  } finally {
    await browser.close();
    rmSync(profile, { recursive: true, force: true });
  }
});
