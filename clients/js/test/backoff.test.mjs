//! Backoff statistics: full jitter spreads reconnects (not lockstep), grows and is capped.

import assert from "node:assert/strict";
import test from "node:test";
import { RealtimeClient, backoffDelay } from "../src/index.js";

const stats = (values) => {
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  const sd = Math.sqrt(values.reduce((a, b) => a + (b - mean) ** 2, 0) / values.length);
  return { mean, sd, min: Math.min(...values), max: Math.max(...values) };
};

test("the delay is a uniform draw under min * factor ^ attempt, capped at max", () => {
  const options = { minDelayMs: 100, maxDelayMs: 5_000, factor: 2 };
  for (const [attempt, ceiling] of [[0, 100], [3, 800], [5, 3_200], [6, 5_000], [40, 5_000]]) {
    const draws = Array.from({ length: 2_000 }, () => backoffDelay(attempt, options));
    const { mean, sd, min, max } = stats(draws);
    assert.ok(min >= 0 && max < ceiling, `attempt ${attempt}: [${min}, ${max}] outside [0, ${ceiling})`);
    // Uniform on [0, c): mean c/2, standard deviation c/sqrt(12) ~ 0.29c. Wide margins.
    assert.ok(Math.abs(mean - ceiling / 2) < ceiling * 0.1, `attempt ${attempt}: mean ${mean}`);
    assert.ok(sd > ceiling * 0.2, `attempt ${attempt}: sd ${sd}, not spread`);
    assert.ok(max > ceiling * 0.9 && min < ceiling * 0.1, `attempt ${attempt}: does not cover the range`);
  }
  assert.equal(backoffDelay(3, options, () => 0.5), 400);
  assert.equal(backoffDelay(3, options, () => 0), 0);
});

/** A WebSocket whose handshake always fails, as against a server that is down. */
class Unreachable {
  constructor() {
    setTimeout(() => this.onerror?.({ type: "error", message: "connection refused" }), 0);
  }
  close() {}
  send() {}
}

test("50 clients that lose the server reconnect spread out, not in lockstep", async () => {
  const options = { getToken: () => "t", WebSocket: Unreachable, minDelayMs: 1, maxDelayMs: 20, factor: 2 };
  const delays = Array.from({ length: 5 }, () => []);
  const clients = Array.from({ length: 50 }, () => {
    const client = new RealtimeClient("ws://127.0.0.1:1/ws", options);
    let attempt = 0;
    client.on("disconnected", ({ delayMs, reconnect }) => {
      if (reconnect && attempt < delays.length) delays[attempt].push(delayMs);
      attempt += 1;
    });
    return client;
  });
  const deadline = Date.now() + 10_000;
  while (delays.at(-1).length < clients.length) {
    assert.ok(Date.now() < deadline, "the clients did not retry five times");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  for (const client of clients) client.close();
  delays.forEach((round, attempt) => {
    const ceiling = Math.min(20, 1 * 2 ** attempt);
    const { sd, max, min } = stats(round);
    assert.ok(min >= 0 && max < ceiling, `attempt ${attempt}: ${round}`);
    assert.ok(new Set(round).size > 45, `attempt ${attempt}: clients share delays: ${round}`);
    assert.ok(sd > ceiling * 0.15, `attempt ${attempt}: sd ${sd} of ${round}: lockstep`);
  });
  // The ceiling grows with the attempt: the fifth round waits longer than the first.
  assert.ok(stats(delays[4]).mean > stats(delays[0]).mean * 4);
});
