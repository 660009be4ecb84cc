// A small Socket.IO v5 / Engine.IO v4 client over one WebSocket (protocol/PROTOCOL.md
// sections 1-3, 12 and 13). The dashboard carries its own so that it needs no build step
// and no vendored library; it does only what the dashboard needs: one namespace, JSON
// payloads (no binary attachments), acks, and reconnecting.

const EIO = { OPEN: "0", CLOSE: "1", PING: "2", PONG: "3", MESSAGE: "4", NOOP: "6" };
const SIO = { CONNECT: 0, DISCONNECT: 1, EVENT: 2, ACK: 3, CONNECT_ERROR: 4, BINARY_EVENT: 5, BINARY_ACK: 6 };

// Codes after which trying again with the same credentials cannot succeed.
const FATAL_REFUSALS = new Set(["INVALID_CREDENTIALS", "MISSING_PARAMS", "AUTH_EXPIRED"]);

export class AckTimeoutError extends Error {
  constructor(name) {
    super(`the server did not answer ${name} in time`);
    this.name = "AckTimeoutError";
  }
}

export class DisconnectedError extends Error {
  constructor(name) {
    super(`not connected: ${name} was not answered`);
    this.name = "DisconnectedError";
  }
}

/** Decode the text of a Socket.IO packet: `<type>[<n>-][<nsp>,][<id>][<json>]`. */
export function decodePacket(text) {
  const type = Number(text[0]);
  if (!Number.isInteger(type) || type < 0 || type > 6) {
    throw new Error(`unknown Socket.IO packet type ${JSON.stringify(text[0])}`);
  }
  let i = 1;
  let attachments = 0;
  if (type === SIO.BINARY_EVENT || type === SIO.BINARY_ACK) {
    const dash = text.indexOf("-", i);
    attachments = Number(text.slice(i, dash));
    i = dash + 1;
  }
  let nsp = "/";
  if (text[i] === "/") {
    const comma = text.indexOf(",", i);
    const end = comma < 0 ? text.length : comma;
    nsp = text.slice(i, end);
    i = comma < 0 ? end : comma + 1;
  }
  let id = null;
  let digits = "";
  while (i < text.length && text[i] >= "0" && text[i] <= "9") digits += text[i++];
  if (digits) id = Number(digits);
  const rest = text.slice(i);
  const data = rest ? JSON.parse(rest) : undefined;
  return { type, nsp, id, data, attachments };
}

/** Encode a Socket.IO packet as the text of an Engine.IO message (without the `4`). */
export function encodePacket({ type, nsp = "/", id = null, data }) {
  let text = String(type);
  if (nsp !== "/") text += `${nsp},`;
  if (id !== null) text += String(id);
  if (data !== undefined) text += JSON.stringify(data);
  return text;
}

/** Exponential backoff with jitter: 1 s doubling to 30 s, each wait drawn in [d/2, d]. */
export function backoffDelay(attempt, { baseMs = 1000, maxMs = 30000, random = Math.random } = {}) {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 16));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

/**
 * One Socket.IO namespace over a WebSocket, reconnecting until closed.
 *
 * Server events: `client.on(name, handler)`. Lifecycle, through `client.onStatus(handler)`,
 * `handler({state, ...})` with state one of:
 *   "connecting"                 a WebSocket is being opened (attempt n)
 *   "connected"                  the namespace accepted us ({sid})
 *   "waiting" {delayMs, reason}  disconnected; the next attempt starts in delayMs
 *   "refused" {code, message}    refused for good (bad credentials): no more attempts
 *   "closed"                     close() was called
 */
export class SocketIOClient {
  constructor({
    url,
    namespace = "/",
    auth = null,
    ackTimeoutMs = 10000,
    connectTimeoutMs = 10000,
    WebSocketImpl = globalThis.WebSocket,
    // Tests drive the clock; a page passes nothing.
    timers = globalThis,
  }) {
    this.url = url;
    this.namespace = namespace;
    this.auth = auth;
    this.ackTimeoutMs = ackTimeoutMs;
    this.connectTimeoutMs = connectTimeoutMs;
    this.WebSocketImpl = WebSocketImpl;
    this._timers = timers;
    this.sid = null;
    this.connected = false;
    this._handlers = new Map();
    this._statusHandlers = [];
    this._ws = null;
    this._nextAckId = 0;
    this._acks = new Map();
    this._attempt = 0;
    this._retryTimer = null;
    this._heartbeatTimer = null;
    this._connectTimer = null;
    this._closed = true;
    this._shutdownDelayMs = null;
    this._skipAttachments = 0;
  }

  on(name, handler) {
    if (!this._handlers.has(name)) this._handlers.set(name, []);
    this._handlers.get(name).push(handler);
    return this;
  }

  onStatus(handler) {
    this._statusHandlers.push(handler);
    return this;
  }

  open() {
    this._closed = false;
    this._attempt = 0;
    this._shutdownDelayMs = null;
    this._connect();
  }

  close() {
    this._closed = true;
    this._timers.clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._teardown("client_close", true);
    this._status({ state: "closed" });
  }

  /** Send an event without asking for an ack. Returns false when not connected. */
  emit(name, ...args) {
    if (!this.connected) return false;
    this._sendPacket({ type: SIO.EVENT, nsp: this.namespace, data: [name, ...args] });
    return true;
  }

  /** Send an event and resolve with the ack's first argument. */
  request(name, payload, { timeoutMs = this.ackTimeoutMs } = {}) {
    if (!this.connected) return Promise.reject(new DisconnectedError(name));
    const id = this._nextAckId++;
    return new Promise((resolve, reject) => {
      const timer = this._timers.setTimeout(() => {
        this._acks.delete(id);
        reject(new AckTimeoutError(name));
      }, timeoutMs);
      this._acks.set(id, { name, resolve, reject, timer });
      const data = payload === undefined ? [name] : [name, payload];
      this._sendPacket({ type: SIO.EVENT, nsp: this.namespace, id, data });
    });
  }

  // ---- connecting

  _connect() {
    if (this._closed) return;
    this._attempt += 1;
    this._status({ state: "connecting", attempt: this._attempt });
    let ws;
    try {
      ws = new this.WebSocketImpl(this.url);
    } catch (error) {
      this._scheduleRetry(`cannot open the WebSocket: ${error.message}`);
      return;
    }
    this._ws = ws;
    this._skipAttachments = 0;
    // Covers a WebSocket that never opens and a namespace that never answers.
    this._connectTimer = this._timers.setTimeout(() => this._drop("connect_timeout"), this.connectTimeoutMs);
    ws.binaryType = "arraybuffer";
    ws.onmessage = (message) => {
      if (this._ws === ws) this._onFrame(message.data);
    };
    ws.onclose = (event) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this._drop(event.code === 1001 ? "server_shutdown" : "transport_close", false);
    };
    ws.onerror = () => {
      // A close event always follows an error; the retry is scheduled there.
    };
  }

  _onFrame(data) {
    if (typeof data !== "string") {
      // The admin namespace sends JSON only; attachments of a binary packet are skipped.
      if (this._skipAttachments > 0) this._skipAttachments -= 1;
      return;
    }
    const kind = data[0];
    if (kind === EIO.OPEN) {
      const handshake = JSON.parse(data.slice(1));
      this._pingInterval = handshake.pingInterval;
      this._pingTimeout = handshake.pingTimeout;
      this._armHeartbeat();
      const connect = { type: SIO.CONNECT, nsp: this.namespace };
      if (this.auth !== null) connect.data = typeof this.auth === "function" ? this.auth() : this.auth;
      this._sendPacket(connect);
    } else if (kind === EIO.PING) {
      this._armHeartbeat();
      this._sendRaw(EIO.PONG + data.slice(1));
    } else if (kind === EIO.CLOSE) {
      this._drop("server_close");
    } else if (kind === EIO.MESSAGE) {
      let packet;
      try {
        packet = decodePacket(data.slice(1));
      } catch (error) {
        this._drop(`protocol_error: ${error.message}`);
        return;
      }
      this._onPacket(packet);
    }
    // NOOP and anything newer are ignored, as the protocol asks of clients.
  }

  _onPacket(packet) {
    if (packet.nsp !== this.namespace) return;
    switch (packet.type) {
      case SIO.CONNECT:
        this._timers.clearTimeout(this._connectTimer);
        this.sid = packet.data && packet.data.sid;
        this.connected = true;
        this._attempt = 0;
        this._shutdownDelayMs = null;
        this._status({ state: "connected", sid: this.sid });
        break;
      case SIO.CONNECT_ERROR: {
        const message = (packet.data && packet.data.message) || "refused";
        if (FATAL_REFUSALS.has(message)) {
          this._closed = true;
          this._teardown("refused", true);
          this._status({ state: "refused", code: message, message });
        } else {
          this._drop(message);
        }
        break;
      }
      case SIO.EVENT:
        this._onEvent(packet);
        break;
      case SIO.ACK: {
        const pending = this._acks.get(packet.id);
        if (pending) {
          this._acks.delete(packet.id);
          this._timers.clearTimeout(pending.timer);
          pending.resolve(Array.isArray(packet.data) ? packet.data[0] : undefined);
        }
        break;
      }
      case SIO.DISCONNECT:
        this._drop("server_disconnect");
        break;
      case SIO.BINARY_EVENT:
      case SIO.BINARY_ACK:
        this._skipAttachments = packet.attachments;
        break;
      default:
        break;
    }
  }

  _onEvent(packet) {
    if (!Array.isArray(packet.data) || typeof packet.data[0] !== "string") return;
    const [name, ...args] = packet.data;
    if (name === "server:shutdown") {
      const delay = args[0] && Number(args[0].reconnect_delay_ms);
      if (Number.isFinite(delay) && delay >= 0) this._shutdownDelayMs = delay;
    }
    if (name === "error" && args[0] && args[0].code === "AUTH_EXPIRED") this._closed = true;
    for (const handler of this._handlers.get(name) || []) {
      try {
        handler(...args);
      } catch (error) {
        console.error(`handler of ${name} failed`, error);
      }
    }
    if (name === "server:shutdown") {
      // The server asks each client to leave and come back after its own delay, so that
      // they do not all return at once: leave now rather than wait to be closed.
      this._drop("server_shutdown");
    } else if (name === "error" && args[0] && args[0].code === "AUTH_EXPIRED") {
      this._teardown("auth_expired", true);
      this._status({ state: "refused", code: "AUTH_EXPIRED", message: args[0].message || "" });
    }
  }

  _armHeartbeat() {
    this._timers.clearTimeout(this._heartbeatTimer);
    // No ping for pingInterval + pingTimeout: the connection is dead even if the socket
    // has not noticed (PROTOCOL.md section 2).
    const deadline = (this._pingInterval || 25000) + (this._pingTimeout || 60000);
    this._heartbeatTimer = this._timers.setTimeout(() => this._drop("ping_timeout"), deadline);
  }

  // ---- leaving

  _drop(reason, closeSocket = true) {
    if (this._closed && !this._ws && !this.connected) return;
    this._teardown(reason, closeSocket);
    if (this._closed) return;
    this._scheduleRetry(reason);
  }

  _teardown(reason, closeSocket) {
    this._timers.clearTimeout(this._heartbeatTimer);
    this._timers.clearTimeout(this._connectTimer);
    const ws = this._ws;
    this._ws = null;
    if (ws && closeSocket) {
      if (this.connected && ws.readyState === 1) {
        ws.send(EIO.MESSAGE + encodePacket({ type: SIO.DISCONNECT, nsp: this.namespace }));
      }
      try {
        ws.close(1000);
      } catch {
        // Already closing: nothing left to release.
      }
    }
    const wasConnected = this.connected;
    this.connected = false;
    this.sid = null;
    for (const [id, pending] of this._acks) {
      this._timers.clearTimeout(pending.timer);
      pending.reject(new DisconnectedError(pending.name));
      this._acks.delete(id);
    }
    if (wasConnected) this._status({ state: "disconnected", reason });
  }

  _scheduleRetry(reason) {
    this._timers.clearTimeout(this._retryTimer);
    // _attempt counts the attempts since the last success: 0 right after a connection
    // dropped, so the first retry comes within a second and later ones back off.
    const announced = this._shutdownDelayMs !== null;
    const delayMs = announced ? this._shutdownDelayMs : backoffDelay(this._attempt);
    if (announced) reason = "server_shutdown";
    this._shutdownDelayMs = null;
    this._status({ state: "waiting", delayMs, reason, attempt: this._attempt });
    this._retryTimer = this._timers.setTimeout(() => {
      this._retryTimer = null;
      this._connect();
    }, delayMs);
  }

  // ---- plumbing

  _sendPacket(packet) {
    this._sendRaw(EIO.MESSAGE + encodePacket(packet));
  }

  _sendRaw(text) {
    if (this._ws && this._ws.readyState === 1) this._ws.send(text);
  }

  _status(status) {
    for (const handler of this._statusHandlers) {
      try {
        handler(status);
      } catch (error) {
        console.error("status handler failed", error);
      }
    }
  }
}
