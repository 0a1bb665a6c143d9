//! TypeScript declarations of the realtime JavaScript client (`./index.js`).

/** The WebSocket constructor the client uses: the browser's API (`globalThis.WebSocket` by default). */
export type WebSocketConstructor = new (url: string, protocols: string[]) => WebSocket;

export interface RealtimeClientOptions {
  /** Returns the JWT for the next connect or in-band refresh; called before every connect. */
  getToken: () => string | Promise<string>;
  /** Backoff: the ceiling of the first reconnect delay (ms). Default 500. */
  minDelayMs?: number;
  /** Backoff: the largest ceiling (ms). Default 30000. */
  maxDelayMs?: number;
  /** Backoff: the ceiling grows by this factor per failed attempt. Default 2. */
  factor?: number;
  /** A connection open this long resets the backoff (ms). Default 10000. */
  stableAfterMs?: number;
  /** How long `request` waits for the reply with its id (ms). Default 10000. */
  requestTimeoutMs?: number;
  /** Refresh the token this long before `expires_at` (ms). Default 60000. */
  refreshBeforeMs?: number;
  /** The WebSocket implementation. Default `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor;
}

/** A stream's position: its epoch and the offset of the last message seen. */
export interface Position {
  epoch: string;
  offset: number;
}

/** The payload of the server's `connected` frame. */
export interface ConnectedPayload {
  connection_id: string;
  user_id: string;
  roles: string[];
  expires_at: number | null;
  streams: Record<string, Position & { recovered: boolean }>;
}

/** A frame from the server. */
export interface Message {
  type: string;
  payload: Record<string, unknown>;
  id?: string | number;
  stream?: string;
  offset?: number;
  epoch?: string;
}

/** Why the socket ended and what the client does next. */
export interface DisconnectedEvent {
  /** The close code (1006 for a failed handshake, 0 when getToken or the constructor threw). */
  code: number;
  reason: string;
  /** The handshake's HTTP status, when the WebSocket implementation reports it (the `ws` package does; browsers do not). */
  status?: number;
  /** False after 4003, 4005, a handshake 403 and `close()`: the client stopped. */
  reconnect: boolean;
  /** The wait before the next attempt (0 after 4001). */
  delayMs: number;
}

export interface ErrorEvent {
  code: string;
  message: string;
  id?: string | number;
  /** For a subscribe, unsubscribe or refresh the client made itself. */
  request?: "subscribe" | "unsubscribe" | "refresh";
  topic?: string;
}

export interface StateEvents {
  connecting: (event: { attempt: number }) => void;
  connected: (payload: ConnectedPayload) => void;
  disconnected: (event: DisconnectedEvent) => void;
  /** The stream came back `recovered: true`: what was missed follows, once and in order. */
  recovered: (event: { stream: string }) => void;
  /** The stream came back `recovered: false`: reload the state it feeds, then carry on. */
  unrecovered: (event: { stream: string; epoch: string; offset: number }) => void;
  refreshed: (payload: { expires_at: number | null }) => void;
  /** An `error` frame not answering a `request` (e.g. a refused `send`), or a failed resubscribe/refresh. */
  error: (event: ErrorEvent) => void;
}

export type MessageHandler = (payload: Record<string, unknown>, message: Message) => void;

export interface Subscription {
  readonly topic: string;
  /** Stops `fn`; the topic is unsubscribed when its last callback goes. */
  unsubscribe(): void;
}

/** A request's failure: `timeout`, `disconnected`, `not_connected`, `closed` or the server's error code. */
export class RealtimeError extends Error {
  readonly code: string;
  readonly id?: string | number;
  constructor(code: string, message: string);
}

/** A uniform draw in `[0, min(maxDelayMs, minDelayMs * factor ** attempt))` (full jitter). */
export function backoffDelay(
  attempt: number,
  options?: Pick<RealtimeClientOptions, "minDelayMs" | "maxDelayMs" | "factor">,
  random?: () => number,
): number;

/** What the client does after close `code` (docs/protocol.md, Close codes): stop, reconnect at once with a new token, or reconnect with backoff. */
export function closeStep(code: number, how?: { opened?: boolean; status?: number }): "stop" | "now" | "backoff";

export class RealtimeClient {
  constructor(url: string, options: RealtimeClientOptions);
  readonly state: "idle" | "connecting" | "connected" | "reconnecting" | "stopped";
  readonly connection: ConnectedPayload | null;
  readonly positions: Record<string, Position>;
  on<K extends keyof StateEvents>(type: K, fn: StateEvents[K]): () => void;
  on(type: string, fn: MessageHandler): () => void;
  off(type: string, fn: (...args: any[]) => void): void;
  subscribe(topic: string, fn: MessageHandler): Subscription;
  /** Fire and forget, with a fresh id (returned); `null` when not connected. */
  send(type: string, payload?: Record<string, unknown>): number | null;
  /** Resolves with the frame carrying its id (a protocol reply, or the inbound handler's reply); rejects on an `error` with its id, a timeout or a disconnect. */
  request(type: string, payload?: Record<string, unknown>, options?: { timeoutMs?: number }): Promise<Message>;
  /** Resolves with the round trip in ms. */
  ping(options?: { timeoutMs?: number }): Promise<number>;
  close(): void;
}
