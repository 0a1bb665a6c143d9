//! With the `ws` package as the WebSocket implementation, against the real server binary:
//! messages arrive, the client stops (no reconnect) on a handshake 403 and on 4005, and
//! permessage-deflate, with the server's compression on, works both ways.

import assert from "node:assert/strict";
import test from "node:test";
import WebSocket from "ws";
import { RealtimeClient } from "../src/index.js";
import { API_KEY, next, publish, sleep, startServer, token, until } from "./server.mjs";

test("the ws package works as the WebSocket implementation", async () => {
  const server = await startServer();
  const client = new RealtimeClient(server.wsUrl, { getToken: () => token("dora"), WebSocket });
  const seen = [];
  client.on("note", ({ n }) => seen.push(n));
  try {
    await next(client, "connected");
    await publish(server, { user: "dora" }, "note", { n: 1 });
    await until(() => seen.length === 1, "the note");
    assert.ok((await client.ping()) >= 0);
  } finally {
    client.close();
    await server.stop();
  }
});

test("a handshake 403 (missing permission) stops the client: no reconnect", async () => {
  const server = await startServer({ env: { REALTIME_REQUIRED_PERMISSIONS: "realtime:connect" } });
  let tokens = 0;
  const client = new RealtimeClient(server.wsUrl, {
    getToken: () => {
      tokens += 1;
      return token("erin");
    },
    WebSocket,
    minDelayMs: 10,
    maxDelayMs: 20,
  });
  try {
    const [event] = await next(client, "disconnected");
    assert.equal(event.status, 403);
    assert.equal(event.reconnect, false);
    assert.equal(client.state, "stopped");
    await sleep(200);
    assert.equal(tokens, 1, "it tried again");
  } finally {
    client.close();
    await server.stop();
  }
});

test("a revoked token (4005) stops the client: no reconnect", async () => {
  const server = await startServer();
  let tokens = 0;
  const client = new RealtimeClient(server.wsUrl, {
    getToken: () => {
      tokens += 1;
      return token("finn");
    },
    WebSocket,
    minDelayMs: 10,
    maxDelayMs: 20,
  });
  try {
    await next(client, "connected");
    const disconnected = next(client, "disconnected");
    const response = await fetch(`${server.base}/api/revoke`, {
      method: "POST",
      headers: { Authorization: `Bearer ${API_KEY}`, "Content-Type": "application/json" },
      body: JSON.stringify({ user: "finn", issued_before: Math.floor(Date.now() / 1000) + 5 }),
    });
    assert.equal(response.status, 200, await response.text());
    const [event] = await disconnected;
    assert.equal(event.code, 4005);
    assert.equal(event.reconnect, false);
    assert.equal(client.state, "stopped");
    await sleep(200);
    assert.equal(tokens, 1, "it tried again");
  } finally {
    client.close();
    await server.stop();
  }
});

test("with the server's compression on, the ws package agrees to permessage-deflate both ways", async () => {
  const server = await startServer({ env: { REALTIME_WEBSOCKET_COMPRESSION: "true" } });
  // threshold 0: the ws package compresses even the smallest message it sends.
  const ws = new WebSocket(server.wsUrl, ["realtime.v1", `bearer.${token("gus")}`], { perMessageDeflate: { threshold: 0 } });
  const frames = [];
  ws.on("message", (data) => frames.push(JSON.parse(data.toString())));
  const client = new RealtimeClient(server.wsUrl, { getToken: () => token("gus"), WebSocket });
  const connected = next(client, "connected");
  const notes = [];
  client.on("note", (payload) => notes.push(payload));
  try {
    await until(() => frames.some((f) => f.type === "connected"), "connected");
    assert.equal(ws.extensions, "permessage-deflate");
    ws.send(JSON.stringify({ type: "ping", id: "w1" }));
    await until(() => frames.some((f) => f.type === "pong" && f.id === "w1"), "the pong to a compressed ping");
    await connected;
    const text = "a long note that compresses well; ".repeat(60);
    await publish(server, { user: "gus" }, "note", { text });
    await until(() => notes.length === 1 && frames.some((f) => f.type === "note"), "the note on both sockets");
    assert.equal(notes[0].text, text);
    assert.equal(frames.find((f) => f.type === "note").payload.text, text);
  } finally {
    ws.close();
    client.close();
    await server.stop();
  }
});
