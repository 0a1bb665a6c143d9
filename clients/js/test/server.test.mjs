//! Against the real realtime-server binary: reconnect after a restart, recovery of what was
//! published while the socket was down (each message once, in order), refresh before expiry.

import assert from "node:assert/strict";
import test from "node:test";
import { RealtimeClient } from "../src/index.js";
import { next, publish, sleep, startServer, token, until } from "./server.mjs";

test("the client reconnects by itself after the server is killed and started again", async () => {
  const server = await startServer();
  const client = new RealtimeClient(server.wsUrl, { getToken: () => token("alice"), minDelayMs: 50, maxDelayMs: 300 });
  const seen = [];
  const events = [];
  client.on("note", ({ n }) => seen.push(n));
  for (const type of ["connected", "disconnected", "unrecovered"]) client.on(type, (detail) => events.push([type, detail]));
  try {
    await next(client, "connected");
    await publish(server, { user: "alice" }, "note", { n: 1 });
    await until(() => seen.length === 1, "the first note");
    await server.restart();
    await until(() => events.filter(([type]) => type === "connected").length === 2, "a second connected");
    const disconnected = events.find(([type]) => type === "disconnected")[1];
    assert.equal(disconnected.reconnect, true);
    // The in-memory broker lost its history with the process: the client says so.
    const unrecovered = events.filter(([type]) => type === "unrecovered").map(([, d]) => d.stream).sort();
    assert.deepEqual(unrecovered, ["broadcast", "user:alice"]);
    await publish(server, { user: "alice" }, "note", { n: 2 });
    await until(() => seen.length === 2, "the note after the restart");
    assert.deepEqual(seen, [1, 2]);
  } finally {
    client.close();
    await server.stop();
  }
});

/** A WebSocket the test can cut off: while `offline`, connects go to a closed port. */
function switchable(wsUrl) {
  const control = { offline: false, sockets: [] };
  control.WebSocket = class extends globalThis.WebSocket {
    constructor(url, protocols) {
      super(control.offline ? url.replace(/\/\/[^/]+/, "//127.0.0.1:1") : url, protocols);
      control.sockets.push(this);
    }
  };
  control.cut = () => {
    control.offline = true;
    control.sockets.at(-1).close(4000, "test cut");
  };
  assert.ok(wsUrl);
  return control;
}

test("messages published while the socket was down arrive once, in order, after the reconnect", async () => {
  const server = await startServer();
  const net = switchable(server.wsUrl);
  const client = new RealtimeClient(server.wsUrl, {
    getToken: () => token("bob"),
    WebSocket: net.WebSocket,
    minDelayMs: 20,
    maxDelayMs: 200,
  });
  const personal = [];
  const orders = [];
  const recovered = [];
  const unrecovered = [];
  client.on("note", ({ n }, message) => message.stream === "user:bob" && personal.push(n));
  client.subscribe("orders", ({ n }) => orders.push(n));
  client.on("recovered", ({ stream }) => recovered.push(stream));
  client.on("unrecovered", ({ stream }) => unrecovered.push(stream));
  try {
    await next(client, "connected");
    await until(() => client.positions["topic:orders"], "the subscription");
    for (let n = 1; n <= 3; n++) {
      await publish(server, { user: "bob" }, "note", { n });
      await publish(server, { topic: "orders" }, "note", { n });
    }
    await until(() => personal.length === 3 && orders.length === 3, "the first three");
    const reconnected = next(client, "connected");
    net.cut();
    await next(client, "disconnected");
    for (let n = 4; n <= 8; n++) {
      await publish(server, { user: "bob" }, "note", { n });
      await publish(server, { topic: "orders" }, "note", { n });
    }
    await sleep(100);
    net.offline = false;
    await reconnected;
    for (let n = 9; n <= 10; n++) {
      await publish(server, { user: "bob" }, "note", { n });
      await publish(server, { topic: "orders" }, "note", { n });
    }
    await until(() => personal.length >= 10 && orders.length >= 10, "all ten of each");
    await sleep(200); // a duplicate would show up by now
    const all = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    assert.deepEqual(personal, all);
    assert.deepEqual(orders, all);
    assert.deepEqual(recovered.sort(), ["broadcast", "topic:orders", "user:bob"]);
    assert.deepEqual(unrecovered, []);
  } finally {
    client.close();
    await server.stop();
  }
});

test("a token is refreshed in band before it expires: the connection outlives its first exp", async () => {
  // No leeway: the server closes with 4001 exactly at exp unless the token was refreshed.
  const server = await startServer({ env: { REALTIME_JWT_LEEWAY_SECS: "0" } });
  let tokens = 0;
  const client = new RealtimeClient(server.wsUrl, {
    getToken: () => {
      tokens += 1;
      return token("carol", { expiresInSecs: 3 });
    },
    refreshBeforeMs: 2_000,
  });
  const refreshed = [];
  const disconnected = [];
  client.on("refreshed", (payload) => refreshed.push(payload));
  client.on("disconnected", (info) => disconnected.push(info));
  try {
    const [hello] = await next(client, "connected");
    const firstExpiry = hello.expires_at;
    assert.equal(typeof firstExpiry, "number");
    await until(() => Date.now() > firstExpiry * 1000 + 1_500, "the first exp to pass", 10_000);
    assert.deepEqual(disconnected, [], "the connection was closed");
    assert.ok(refreshed.length >= 1, "no refreshed frame");
    assert.ok(refreshed.at(-1).expires_at > firstExpiry);
    assert.ok(tokens >= 2);
    assert.equal(client.connection.connection_id, hello.connection_id, "same connection");
    assert.ok((await client.ping()) >= 0);
  } finally {
    client.close();
    await server.stop();
  }
});

test("request() of an application message resolves with the inbound handler's reply, matched by id", async () => {
  // The demo handler: `demo.notify` notifies the user and answers `demo.ack`.
  const server = await startServer({ env: { REALTIME_DEMO: "true" } });
  const client = new RealtimeClient(server.wsUrl, { getToken: () => token("dana") });
  const notes = [];
  client.on("notification", (payload) => notes.push(payload));
  try {
    await next(client, "connected");
    const reply = await client.request("demo.notify", {}, { timeoutMs: 5_000 });
    assert.equal(reply.type, "demo.ack");
    assert.equal(typeof reply.id, "number");
    assert.deepEqual(reply.payload, { action: "notify", delivered: 1 });
    await until(() => notes.length === 1, "the notification it sent");
    // Several requests in flight: each settles on its own reply.
    const [topic, job] = await Promise.all([client.request("demo.topic"), client.request("demo.job")]);
    assert.deepEqual([topic.payload.action, job.payload.action], ["topic", "job"]);
    // A refusal by the handler rejects the request, with its code.
    await assert.rejects(client.request("demo.nothing"), (error) => error.code === "unsupported_type");
  } finally {
    client.close();
    await server.stop();
  }
});
