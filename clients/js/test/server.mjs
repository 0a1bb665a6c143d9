//! Test support: the real realtime-server binary on a free port, HS256 tokens, HTTP publish.

import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";

export const SECRET = "js-client-test-secret-0123456789abcdef";
export const API_KEY = "js-client-test-api-key-0123456789";
const BINARY =
  process.env.REALTIME_SERVER_BIN ?? fileURLToPath(new URL("../../../target/debug/realtime-server", import.meta.url));

/** A TCP port nothing listens on right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

const b64 = (value) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");

/** An HS256 JWT for `sub`, expiring in `expiresInSecs`. */
export function token(sub, { expiresInSecs = 3600, roles = [], topics = ["*"] } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const head = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, exp: now + expiresInSecs, iat: now, roles, topics })}`;
  return `${head}.${createHmac("sha256", SECRET).update(head).digest("base64url")}`;
}

/** A running server: `base` (http://…), `wsUrl`, `stop()`, `restart()`. */
export async function startServer({ port, env = {} } = {}) {
  port ??= await freePort();
  const server = { port, base: `http://127.0.0.1:${port}`, wsUrl: `ws://127.0.0.1:${port}/ws`, process: null, env };
  server.start = async () => {
    const child = spawn(BINARY, [], {
      env: {
        ...process.env,
        REALTIME_JWT_SECRET: SECRET,
        REALTIME_API_KEY: API_KEY,
        REALTIME_LISTEN: `127.0.0.1:${port}`,
        REALTIME_LOG: "warn",
        ...env,
      },
      stdio: ["ignore", "ignore", "inherit"],
    });
    server.process = child;
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`${BINARY} exited with ${child.exitCode}`);
      try {
        const response = await fetch(`${server.base}/healthz`);
        if (response.ok) return server;
      } catch {
        // Not listening yet.
      }
      if (Date.now() > deadline) throw new Error(`${BINARY} did not answer /healthz within 20 s`);
      await sleep(50);
    }
  };
  /** Kills the process (SIGKILL: the clients see their sockets drop) and waits for its end. */
  server.stop = async (signal = "SIGKILL") => {
    const child = server.process;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill(signal);
    await exited;
  };
  server.restart = async () => {
    await server.stop();
    await server.start();
  };
  await server.start();
  return server;
}

/** `POST /api/publish`; returns the JSON answer. */
export async function publish(server, target, type, payload) {
  const response = await fetch(`${server.base}/api/publish`, {
    method: "POST",
    headers: { Authorization: `Bearer ${API_KEY}`, "Content-Type": "application/json" },
    body: JSON.stringify({ target, message: { type, payload } }),
  });
  const body = await response.json();
  if (!response.ok) throw new Error(`publish: ${response.status} ${JSON.stringify(body)}`);
  return body;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves once `predicate()` holds (checked every 20 ms); rejects after `timeoutMs`. */
export async function until(predicate, what, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Resolves with the arguments of the next `type` event of `client`. */
export function next(client, type, timeoutMs = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${type} event within ${timeoutMs} ms`));
    }, timeoutMs);
    const off = client.on(type, (...args) => {
      clearTimeout(timer);
      off();
      resolve(args);
    });
  });
}
