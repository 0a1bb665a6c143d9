//! The realtime JavaScript client: one WebSocket to a realtime server, kept open.
//
// An ES module without dependencies, for browsers and Node (any WebSocket implementation
// with the browser's API: `globalThis.WebSocket` by default). It follows docs/protocol.md:
// the token travels in the `bearer.<JWT>` subprotocol, never the URL; reconnects use
// exponential backoff with full jitter; the close code decides the next step; the token is
// refreshed in band before it expires; positions are kept per stream and sent as `since` on
// every reconnect (topics are resubscribed with theirs), so the application sees each
// message once, in order, and a stream that could not be recovered as an `unrecovered`
// event; requests carry an `id` and their promise settles on the reply with that id or on a
// timeout.

/** Close codes after which the client stops for good (docs/protocol.md, Close codes). */
const STOP_CODES = new Map([
  [4003, "kicked"],
  [4005, "token revoked"],
]);

/** Close code for a token whose `exp` passed: get a fresh token and reconnect at once. */
const TOKEN_EXPIRED = 4001;

/**
 * What the client does after a socket ended with close `code` (docs/protocol.md, Close
 * codes): `"stop"` (4003 kicked, 4005 revoked, a handshake answered 403), `"now"` (4001
 * token expired: a new token, no delay) or `"backoff"` (anything else).
 *
 * @param {number} code
 * @param {{opened?: boolean, status?: number}} [how] whether the socket had opened, and
 *   the handshake's HTTP status when the WebSocket implementation reports it
 * @returns {"stop"|"now"|"backoff"}
 */
export function closeStep(code, { opened = true, status } = {}) {
  if (STOP_CODES.has(code)) return "stop";
  // A revoked token or missing permission: a new token for the same user is refused too.
  if (!opened && status === 403) return "stop";
  return code === TOKEN_EXPIRED ? "now" : "backoff";
}

const DEFAULTS = Object.freeze({
  minDelayMs: 500,
  maxDelayMs: 30_000,
  factor: 2,
  stableAfterMs: 10_000,
  requestTimeoutMs: 10_000,
  refreshBeforeMs: 60_000,
});

/** The least time between two refreshes of one connection, so a short-lived token cannot spin. */
const MIN_REFRESH_INTERVAL_MS = 1_000;

/**
 * The delay before reconnect attempt `attempt` (0 for the first): full jitter, a uniform
 * draw in `[0, min(maxDelayMs, minDelayMs * factor ** attempt))`.
 *
 * @param {number} attempt
 * @param {{minDelayMs?: number, maxDelayMs?: number, factor?: number}} [options]
 * @param {() => number} [random] a uniform draw in [0, 1)
 * @returns {number}
 */
export function backoffDelay(attempt, options = {}, random = Math.random) {
  const min = options.minDelayMs ?? DEFAULTS.minDelayMs;
  const max = options.maxDelayMs ?? DEFAULTS.maxDelayMs;
  const factor = options.factor ?? DEFAULTS.factor;
  const ceiling = Math.min(max, min * Math.pow(factor, Math.max(0, attempt)));
  return random() * ceiling;
}

/** An error of a request: an `error` frame answered it, it timed out, or the socket closed. */
export class RealtimeError extends Error {
  /**
   * @param {string} code `timeout`, `disconnected`, `not_connected`, `closed` or the server's error code
   * @param {string} message
   */
  constructor(code, message) {
    super(message);
    this.name = "RealtimeError";
    this.code = code;
  }
}

/** A client of one realtime server, connected from construction until `close()`. */
export class RealtimeClient {
  /**
   * @param {string} url the server's WebSocket endpoint, e.g. `wss://rt.example.com/ws`
   *   (`http(s)://` is turned into `ws(s)://`; a relative URL is resolved against the page)
   * @param {import("./index.js").RealtimeClientOptions} options
   */
  constructor(url, options = {}) {
    if (typeof options.getToken !== "function") {
      throw new TypeError("RealtimeClient needs options.getToken, a function returning a JWT");
    }
    this._url = url;
    this._options = { ...DEFAULTS, ...options };
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this._WebSocket !== "function") {
      throw new TypeError("no WebSocket implementation: pass options.WebSocket");
    }
    /** @type {Map<string, Set<Function>>} */
    this._handlers = new Map();
    /** @type {Map<string, Set<Function>>} topic → its subscribers' callbacks */
    this._topics = new Map();
    /** @type {Map<string, {epoch: string, offset: number}>} stream → last position seen */
    this._positions = new Map();
    /** @type {Map<string|number, {resolve: Function, reject: Function, timer: any}>} */
    this._pending = new Map();
    this._nextId = 1;
    this._attempt = 0;
    this._socket = null;
    this._state = "idle";
    this._stopped = false;
    this._timers = new Set();
    this._stableTimer = null;
    this._refreshTimer = null;
    this._lastRefreshAt = 0;
    this._connection = null;
    // Start after the caller had the chance to register handlers.
    queueMicrotask(() => this._connect());
  }

  /** `idle`, `connecting`, `connected`, `reconnecting` or `stopped`. */
  get state() {
    return this._state;
  }

  /** The `connected` payload of the current connection (`connection_id`, `user_id`, ...), or null. */
  get connection() {
    return this._connection;
  }

  /** The last position seen of each stream, as `since` would send it. */
  get positions() {
    return Object.fromEntries([...this._positions].map(([k, v]) => [k, { ...v }]));
  }

  /**
   * Calls `fn` for every message of `type` (an application type, `presence.join`, `error`),
   * or on a state event: `connecting`, `connected`, `disconnected`, `recovered`,
   * `unrecovered`, `refreshed`. Returns a function that removes the handler.
   *
   * @param {string} type
   * @param {Function} fn
   * @returns {() => void}
   */
  on(type, fn) {
    let set = this._handlers.get(type);
    if (!set) {
      set = new Set();
      this._handlers.set(type, set);
    }
    set.add(fn);
    return () => this.off(type, fn);
  }

  /** Removes a handler added with `on`. */
  off(type, fn) {
    this._handlers.get(type)?.delete(fn);
  }

  /**
   * Subscribes to `topic`; `fn(payload, message)` is called for each of its messages, once
   * and in order, across reconnects (the topic is resubscribed with `since` on each).
   *
   * @param {string} topic
   * @param {Function} fn
   * @returns {{topic: string, unsubscribe(): void}}
   */
  subscribe(topic, fn) {
    let set = this._topics.get(topic);
    const first = !set;
    if (!set) {
      set = new Set();
      this._topics.set(topic, set);
    }
    set.add(fn);
    if (first && this._state === "connected") this._subscribeTopic(topic);
    let done = false;
    return {
      topic,
      unsubscribe: () => {
        if (done) return;
        done = true;
        const callbacks = this._topics.get(topic);
        if (!callbacks) return;
        callbacks.delete(fn);
        if (callbacks.size > 0) return;
        this._topics.delete(topic);
        this._positions.delete(`topic:${topic}`);
        if (this._state === "connected") {
          this.request("unsubscribe", { topic }).catch((error) => this._reportError(error, "unsubscribe", topic));
        }
      },
    };
  }

  /**
   * Sends a message to the server's inbound handler, with a fresh `id`; an `error` frame
   * answering it is emitted as an `error` event with that `id`. Returns the id, or `null`
   * when the client is not connected (nothing is queued).
   *
   * @param {string} type
   * @param {object} [payload]
   * @returns {string|number|null}
   */
  send(type, payload = {}) {
    if (this._state !== "connected") return null;
    const id = this._nextId++;
    this._write({ type, id, payload });
    return id;
  }

  /**
   * Sends a message with an `id` and resolves with the server's frame carrying the same id
   * (`pong`, `subscribed`, `unsubscribed`, `refreshed`, or the inbound handler's reply to an
   * application message: the server echoes the id on every reply and refusal); rejects with
   * a `RealtimeError` on an `error` frame with that id, after `timeoutMs` (also when the
   * handler answers nothing), or when the socket closes first.
   *
   * @param {string} type
   * @param {object} [payload]
   * @param {{timeoutMs?: number}} [options]
   * @returns {Promise<object>}
   */
  request(type, payload = {}, options = {}) {
    if (this._state !== "connected") {
      return Promise.reject(new RealtimeError("not_connected", `${type}: not connected`));
    }
    const id = this._nextId++;
    const timeoutMs = options.timeoutMs ?? this._options.requestTimeoutMs;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new RealtimeError("timeout", `${type}: no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this._pending.set(id, { resolve, reject, timer });
      this._write({ type, id, payload });
    });
  }

  /** Sends a `ping`; resolves with the round trip in milliseconds. */
  async ping(options = {}) {
    const start = Date.now();
    await this.request("ping", {}, options);
    return Date.now() - start;
  }

  /** Closes the connection for good: no reconnect; pending requests are rejected. */
  close() {
    if (this._stopped) return;
    const socket = this._socket;
    this._stop(1000, "client closed");
    if (socket) {
      try {
        socket.close(1000, "client closed");
      } catch {
        // Already closed.
      }
    }
  }

  // ---- connection lifecycle ----

  async _connect() {
    if (this._stopped) return;
    this._state = "connecting";
    this._emit("connecting", { attempt: this._attempt });
    let token;
    try {
      token = await this._options.getToken();
    } catch (error) {
      if (this._stopped) return;
      this._disconnected({ code: 0, reason: `getToken failed: ${error?.message ?? error}`, opened: false });
      return;
    }
    if (this._stopped) return;
    let socket;
    try {
      socket = new this._WebSocket(this._connectUrl(), ["realtime.v1", `bearer.${token}`]);
    } catch (error) {
      this._disconnected({ code: 0, reason: `cannot open: ${error?.message ?? error}`, opened: false });
      return;
    }
    this._socket = socket;
    let opened = false;
    let ended = false;
    const end = (code, reason, status) => {
      if (ended) return;
      ended = true;
      socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
      if (this._socket === socket) this._socket = null;
      if (this._stopped) return;
      this._disconnected({ code, reason, opened, status });
    };
    socket.onopen = () => {
      opened = true;
    };
    socket.onmessage = (event) => {
      if (this._socket !== socket) return;
      if (typeof event.data !== "string") return;
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message && typeof message === "object") this._handle(message);
    };
    socket.onclose = (event) => end(event.code ?? 1006, event.reason ?? "", undefined);
    socket.onerror = (event) => {
      if (opened) return; // a close event follows
      // A failed handshake: the `ws` package names the status in the message; browsers do not.
      const text = String(event?.message ?? event?.error?.message ?? "");
      const match = /Unexpected server response: (\d{3})/.exec(text);
      const status = match ? Number(match[1]) : undefined;
      end(1006, text || "handshake failed", status);
      // After `end` took the handlers off: closing a socket that never opened fires
      // `error` again in some implementations.
      try {
        socket.close();
      } catch {
        // Not open.
      }
    };
  }

  /** The URL of the next upgrade: `since` holds the positions of the connection's streams. */
  _connectUrl() {
    const base = globalThis.location?.href;
    const url = base ? new URL(this._url, base) : new URL(this._url);
    if (url.protocol === "http:") url.protocol = "ws:";
    if (url.protocol === "https:") url.protocol = "wss:";
    if (url.searchParams.has("since")) url.searchParams.delete("since");
    const since = {};
    for (const [stream, position] of this._positions) {
      if (!stream.startsWith("topic:")) since[stream] = position;
    }
    const text = url.toString();
    if (Object.keys(since).length === 0) return text;
    const separator = url.search ? "&" : "?";
    const hash = url.hash;
    const withoutHash = hash ? text.slice(0, -hash.length) : text;
    return `${withoutHash}${separator}since=${encodeURIComponent(JSON.stringify(since))}${hash}`;
  }

  /** After a socket ended: decide from the close code whether and when to reconnect. */
  _disconnected({ code, reason, opened, status }) {
    this._clearConnectionTimers();
    this._rejectPending("disconnected", `connection closed (${code}${reason ? ` ${reason}` : ""})`);
    this._connection = null;
    const step = closeStep(code, { opened, status });
    const info = { code, reason, status, reconnect: step !== "stop", delayMs: 0 };
    if (step === "stop") {
      if (STOP_CODES.has(code)) info.reason = reason || STOP_CODES.get(code);
      this._stop(code, info.reason, info);
      return;
    }
    // "now": no delay, no attempt counted (getToken is called before every connect).
    if (step === "backoff") {
      info.delayMs = backoffDelay(this._attempt, this._options);
      this._attempt += 1;
    }
    this._state = "reconnecting";
    this._emit("disconnected", info);
    this._later(info.delayMs, () => this._connect());
  }

  _stop(code, reason, info = { code, reason, reconnect: false, delayMs: 0 }) {
    this._stopped = true;
    this._state = "stopped";
    this._socket = null;
    this._connection = null;
    this._clearConnectionTimers();
    for (const timer of this._timers) clearTimeout(timer);
    this._timers.clear();
    this._rejectPending("closed", `client stopped (${code} ${reason})`);
    this._emit("disconnected", info);
  }

  _clearConnectionTimers() {
    clearTimeout(this._stableTimer);
    clearTimeout(this._refreshTimer);
    this._stableTimer = null;
    this._refreshTimer = null;
  }

  _rejectPending(code, text) {
    for (const { reject, timer } of this._pending.values()) {
      clearTimeout(timer);
      reject(new RealtimeError(code, text));
    }
    this._pending.clear();
  }

  _later(ms, fn) {
    const timer = setTimeout(() => {
      this._timers.delete(timer);
      fn();
    }, ms);
    this._timers.add(timer);
    return timer;
  }

  // ---- frames from the server ----

  _handle(message) {
    const { type, id, payload = {} } = message;
    const pending = id !== undefined && this._pending.has(id);
    if (pending) {
      const { resolve, reject, timer } = this._pending.get(id);
      this._pending.delete(id);
      clearTimeout(timer);
      if (type === "error") {
        const error = new RealtimeError(payload.code ?? "error", payload.message ?? "error");
        error.id = id;
        reject(error);
      } else {
        resolve(message);
      }
    }
    switch (type) {
      case "connected":
        return this._onConnected(payload);
      case "subscribed":
        return this._onSubscribed(payload);
      case "unsubscribed":
        if (!this._topics.has(payload.topic)) this._positions.delete(`topic:${payload.topic}`);
        return;
      case "refreshed":
        this._scheduleRefresh(payload.expires_at);
        return this._emit("refreshed", payload);
      case "pong":
        return;
      case "error":
        // A request's error rejected its promise; any other goes to `on("error")`.
        if (!pending) this._emit("error", { ...payload, id });
        return;
      default:
        return this._deliver(message);
    }
  }

  _onConnected(payload) {
    this._connection = payload;
    this._state = "connected";
    const streams = payload.streams ?? {};
    const asked = new Set([...this._positions.keys()].filter((s) => !s.startsWith("topic:")));
    const events = [];
    for (const [stream, position] of Object.entries(streams)) {
      events.push(this._position(stream, position, asked.has(stream)));
    }
    // Streams the connection no longer has (a role gone, a topic the backend had
    // subscribed the old connection to) are forgotten.
    for (const stream of [...this._positions.keys()]) {
      const topic = stream.startsWith("topic:") ? stream.slice("topic:".length) : null;
      if (topic === null ? !(stream in streams) : !this._topics.has(topic)) this._positions.delete(stream);
    }
    this._stableTimer = setTimeout(() => {
      this._attempt = 0;
    }, this._options.stableAfterMs);
    this._scheduleRefresh(payload.expires_at);
    this._emit("connected", payload);
    for (const event of events) if (event) this._emit(event.type, event.detail);
    for (const topic of this._topics.keys()) this._subscribeTopic(topic);
  }

  _onSubscribed(payload) {
    const stream = `topic:${payload.topic}`;
    const asked = this._positions.has(stream);
    const event = this._position(stream, payload, asked);
    if (event) this._emit(event.type, event.detail);
  }

  /**
   * Takes a stream's position from `connected` or `subscribed`. A recovered stream keeps
   * the client's own position: the replay that follows moves it, message by message.
   */
  _position(stream, { epoch, offset, recovered }, asked) {
    if (typeof epoch !== "string" || typeof offset !== "number") return null;
    if (recovered === true && this._positions.get(stream)?.epoch === epoch) {
      return { type: "recovered", detail: { stream } };
    }
    this._positions.set(stream, { epoch, offset });
    return asked ? { type: "unrecovered", detail: { stream, epoch, offset } } : null;
  }

  _subscribeTopic(topic) {
    const payload = { topic };
    const since = this._positions.get(`topic:${topic}`);
    if (since) payload.since = since;
    this.request("subscribe", payload).catch((error) => this._reportError(error, "subscribe", topic));
  }

  _reportError(error, request, topic) {
    if (error.code === "disconnected" || error.code === "closed") return;
    this._emit("error", { code: error.code, message: error.message, id: error.id, request, topic });
  }

  /** An application message: dropped when its stream's position already covers it. */
  _deliver(message) {
    const { stream, epoch, offset } = message;
    if (typeof stream === "string" && typeof epoch === "string" && typeof offset === "number") {
      const seen = this._positions.get(stream);
      if (seen && seen.epoch === epoch && offset <= seen.offset) return;
      this._positions.set(stream, { epoch, offset });
    }
    const payload = message.payload ?? {};
    this._emit(message.type, payload, message);
    if (typeof stream === "string" && stream.startsWith("topic:")) {
      const callbacks = this._topics.get(stream.slice("topic:".length));
      if (callbacks) for (const fn of [...callbacks]) this._call(fn, payload, message);
    }
  }

  // ---- token refresh ----

  _scheduleRefresh(expiresAt) {
    clearTimeout(this._refreshTimer);
    this._refreshTimer = null;
    if (typeof expiresAt !== "number") return;
    const due = expiresAt * 1000 - this._options.refreshBeforeMs;
    const earliest = this._lastRefreshAt + MIN_REFRESH_INTERVAL_MS;
    const delay = Math.max(0, due - Date.now(), earliest - Date.now());
    this._refreshTimer = setTimeout(() => this._refresh(), delay);
  }

  async _refresh() {
    this._refreshTimer = null;
    this._lastRefreshAt = Date.now();
    const socket = this._socket;
    try {
      const token = await this._options.getToken();
      if (this._socket !== socket || this._state !== "connected") return;
      await this.request("refresh", { token });
      // `refreshed` reschedules.
    } catch (error) {
      if (this._socket !== socket || this._state !== "connected") return;
      this._reportError(error, "refresh");
      // Try again; if the token runs out first, the server closes with 4001 and the
      // client reconnects with a fresh token.
      this._refreshTimer = setTimeout(() => this._refresh(), Math.max(MIN_REFRESH_INTERVAL_MS, this._options.minDelayMs));
    }
  }

  // ---- plumbing ----

  _write(message) {
    try {
      this._socket?.send(JSON.stringify(message));
    } catch {
      // The close event follows.
    }
  }

  _emit(type, ...args) {
    const set = this._handlers.get(type);
    if (set) for (const fn of [...set]) this._call(fn, ...args);
  }

  _call(fn, ...args) {
    try {
      fn(...args);
    } catch (error) {
      // An application handler's exception must not break the client's state.
      if (typeof globalThis.reportError === "function") globalThis.reportError(error);
      else console.error(error);
    }
  }
}
