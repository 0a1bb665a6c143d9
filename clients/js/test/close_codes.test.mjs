//! The close-code policy is the table of docs/protocol.md: every row's last column says what
//! `closeStep` does with that code.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import test from "node:test";
import { closeStep } from "../src/index.js";

/** `[code, what the client does]` for each row of the Close codes table. */
function documentedCloseCodes() {
  const doc = readFileSync(new URL("../../../docs/protocol.md", import.meta.url), "utf8");
  const section = doc.split("\n## Close codes\n")[1].split("\n## ")[0];
  return section
    .split("\n")
    .map((line) => line.trim().replace(/^\||\|$/g, "").split("|").map((cell) => cell.trim()))
    .filter((cells) => /^\d{4}$/.test(cells[0]))
    .map((cells) => [Number(cells[0]), cells.at(-1)]);
}

test("closeStep does what docs/protocol.md's close-code table says of every code", () => {
  const rows = documentedCloseCodes();
  assert.ok(rows.length >= 15, `only ${rows.length} rows`);
  for (const [code, does] of rows) {
    const expected = does.startsWith("stops")
      ? "stop"
      : does.startsWith("reconnects at once with a new token")
        ? "now"
        : does.startsWith("reconnects with backoff")
          ? "backoff"
          : assert.fail(`${code}: ${does} is not one of the three answers`);
    assert.equal(closeStep(code), expected, `${code}: ${does}`);
  }
  // A refused handshake: 403 stops, anything else backs off (1006: no close frame).
  assert.equal(closeStep(1006, { opened: false, status: 403 }), "stop");
  for (const status of [401, 503, undefined]) assert.equal(closeStep(1006, { opened: false, status }), "backoff");
  assert.equal(closeStep(1006), "backoff");
});
