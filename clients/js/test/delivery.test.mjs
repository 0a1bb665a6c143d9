//! Delivery rules on scripted frames: each message once and in order, whatever the server
//! sends twice, and a recovered stream's replay is not mistaken for duplicates.

import assert from "node:assert/strict";
import test from "node:test";
import { RealtimeClient } from "../src/index.js";

/** A WebSocket the test scripts: `FakeSocket.last.receive(frame)`, `.drop(code)`. */
class FakeSocket {
  static all = [];
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.sent = [];
    FakeSocket.all.push(this);
    setTimeout(() => this.onopen?.({}), 0);
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close() {}
  receive(frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  drop(code) {
    this.onclose?.({ code, reason: "" });
  }
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 5));
const connected = (streams) => ({ type: "connected", payload: { connection_id: "c", user_id: "a", roles: [], expires_at: null, streams } });
const note = (n, offset, epoch = "E1") => ({ type: "note", payload: { n }, stream: "user:a", offset, epoch });

test("a frame at or below its stream's position is dropped; a recovered replay is not", async () => {
  FakeSocket.all = [];
  const client = new RealtimeClient("ws://x/ws", { getToken: () => "tok", WebSocket: FakeSocket, minDelayMs: 1, maxDelayMs: 2 });
  const seen = [];
  const events = [];
  client.on("note", ({ n }) => seen.push(n));
  for (const type of ["recovered", "unrecovered"]) client.on(type, (detail) => events.push({ type, ...detail }));
  await tick();
  const first = FakeSocket.all[0];
  assert.deepEqual(first.protocols, ["realtime.v1", "bearer.tok"]);
  assert.equal(first.url, "ws://x/ws", "no since on the first connect, no token in the URL");
  first.receive(connected({ "user:a": { epoch: "E1", offset: 2, recovered: false } }));
  for (const frame of [note(3, 3), note(3, 3), note(2, 2), note(4, 4), note(4, 4)]) first.receive(frame);
  assert.deepEqual(seen, [3, 4]);
  assert.deepEqual(events, [], "nothing to recover on a first connect");

  first.drop(1006);
  await new Promise((resolve) => setTimeout(resolve, 20));
  const second = FakeSocket.all[1];
  const since = JSON.parse(decodeURIComponent(new URL(second.url).searchParams.get("since")));
  assert.deepEqual(since, { "user:a": { epoch: "E1", offset: 4 } });
  // The server recovered: `connected` names the stream's top (7), then replays 5..7.
  second.receive(connected({ "user:a": { epoch: "E1", offset: 7, recovered: true } }));
  for (const frame of [note(5, 5), note(6, 6), note(6, 6), note(7, 7)]) second.receive(frame);
  assert.deepEqual(seen, [3, 4, 5, 6, 7]);
  assert.deepEqual(events, [{ type: "recovered", stream: "user:a" }]);

  second.drop(4008);
  await new Promise((resolve) => setTimeout(resolve, 20));
  const third = FakeSocket.all[2];
  // A new epoch (history lost): an explicit event, then the new epoch's messages.
  third.receive(connected({ "user:a": { epoch: "E2", offset: 1, recovered: false } }));
  third.receive(note(8, 1, "E2"));
  third.receive(note(9, 2, "E2"));
  assert.deepEqual(seen, [3, 4, 5, 6, 7, 9]);
  assert.deepEqual(events.at(-1), { type: "unrecovered", stream: "user:a", epoch: "E2", offset: 1 });
  client.close();
});

test("topics are resubscribed with since; requests settle by id or time out", async () => {
  FakeSocket.all = [];
  const client = new RealtimeClient("ws://x/ws", {
    getToken: () => "tok",
    WebSocket: FakeSocket,
    minDelayMs: 1,
    maxDelayMs: 2,
    requestTimeoutMs: 50,
  });
  const orders = [];
  client.subscribe("orders", ({ n }) => orders.push(n));
  await tick();
  const first = FakeSocket.all[0];
  first.receive(connected({}));
  const subscribe = first.sent.find((frame) => frame.type === "subscribe");
  assert.deepEqual(subscribe.payload, { topic: "orders" });
  first.receive({ type: "subscribed", id: subscribe.id, payload: { topic: "orders", epoch: "T", offset: 0, recovered: false } });
  first.receive({ type: "n", payload: { n: 1 }, stream: "topic:orders", epoch: "T", offset: 1 });
  first.receive({ type: "n", payload: { n: 1 }, stream: "topic:orders", epoch: "T", offset: 1 });
  assert.deepEqual(orders, [1]);

  const ping = client.request("ping");
  const pingFrame = first.sent.at(-1);
  first.receive({ type: "pong", id: pingFrame.id, payload: {} });
  assert.equal((await ping).type, "pong");
  const refused = client.request("ping");
  first.receive({ type: "error", id: first.sent.at(-1).id, payload: { code: "rate_limited", message: "slow down" } });
  await assert.rejects(refused, { name: "RealtimeError", code: "rate_limited" });
  await assert.rejects(client.request("ping"), { code: "timeout" });

  first.drop(1012);
  await new Promise((resolve) => setTimeout(resolve, 20));
  const second = FakeSocket.all[1];
  second.receive(connected({}));
  const again = second.sent.find((frame) => frame.type === "subscribe");
  assert.deepEqual(again.payload, { topic: "orders", since: { epoch: "T", offset: 1 } });
  client.close();
});

test("close codes: 4003 and 4005 stop, 4001 reconnects at once with a new token", async () => {
  for (const [code, reconnect] of [[4003, false], [4005, false], [4001, true], [1012, true], [4004, true], [4010, true], [1006, true], [4008, true]]) {
    FakeSocket.all = [];
    let tokens = 0;
    const client = new RealtimeClient("ws://x/ws", { getToken: () => `t${++tokens}`, WebSocket: FakeSocket, minDelayMs: 1, maxDelayMs: 2 });
    const disconnects = [];
    client.on("disconnected", (info) => disconnects.push(info));
    await tick();
    FakeSocket.all[0].receive(connected({}));
    FakeSocket.all[0].drop(code);
    await new Promise((resolve) => setTimeout(resolve, 30));
    assert.equal(disconnects[0].code, code);
    assert.equal(disconnects[0].reconnect, reconnect, `${code}`);
    assert.equal(FakeSocket.all.length > 1, reconnect, `${code}: a new socket`);
    assert.equal(client.state === "stopped", !reconnect, `${code}`);
    if (code === 4001) {
      assert.equal(disconnects[0].delayMs, 0);
      assert.deepEqual(FakeSocket.all[1].protocols, ["realtime.v1", "bearer.t2"]);
    }
    client.close();
  }
});
