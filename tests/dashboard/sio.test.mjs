// The dashboard's Socket.IO client (replyhq_trio/dashboard/sio.js) under node's test runner:
// its codec against protocol/vectors, and its connection logic against a scripted server
// on a fake WebSocket and a fake clock. Run by test_sio.py (`node --test`).

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

const root = new URL("../../", import.meta.url);
// A data: URL imports the file as a module whatever node makes of a .js file outside a
// package with "type": "module".
const source = readFileSync(new URL("replyhq_trio/dashboard/sio.js", root), "utf8");
const sio = await import(`data:text/javascript,${encodeURIComponent(source)}`);
const { AckTimeoutError, DisconnectedError, SocketIOClient, backoffDelay, decodePacket, encodePacket } = sio;

const vectors = JSON.parse(
  readFileSync(new URL("protocol/vectors/socketio-packets.json", root), "utf8"),
).vectors;
const TYPES = { CONNECT: 0, DISCONNECT: 1, EVENT: 2, ACK: 3, CONNECT_ERROR: 4 };

test("packets without attachments decode and encode as the vectors say", () => {
  const plain = vectors.filter((v) => !v.attachments);
  assert.ok(plain.length > 20);
  for (const v of plain) {
    const decoded = decodePacket(v.text);
    assert.deepEqual(
      { type: decoded.type, nsp: decoded.nsp, id: decoded.id, data: decoded.data ?? null },
      { type: TYPES[v.packet.type], nsp: v.packet.namespace, id: v.packet.id, data: v.packet.data },
      v.name,
    );
    if (!v.decode_only) {
      const packet = { type: decoded.type, nsp: decoded.nsp, id: decoded.id, data: decoded.data };
      assert.equal(encodePacket(packet), v.encoded ?? v.text, v.name);
    }
  }
});

test("binary packets are recognised with their attachment count", () => {
  for (const v of vectors.filter((x) => x.attachments)) {
    const decoded = decodePacket(v.text);
    assert.equal(decoded.type, v.packet.type === "EVENT" ? 5 : 6, v.name);
    assert.equal(decoded.attachments, v.attachments.length, v.name);
    assert.equal(decoded.nsp, v.packet.namespace, v.name);
    assert.equal(decoded.id, v.packet.id, v.name);
  }
});

test("backoff doubles from 1 s to 30 s, each wait drawn in [d/2, d]", () => {
  const ceilings = [1000, 2000, 4000, 8000, 16000, 30000, 30000];
  ceilings.forEach((ceiling, attempt) => {
    assert.equal(backoffDelay(attempt, { random: () => 0 }), ceiling / 2);
    assert.equal(backoffDelay(attempt, { random: () => 1 }), ceiling);
  });
});

// ---- a scripted server

class Clock {
  constructor() {
    this.now = 0;
    this.timers = new Map();
    this.nextId = 1;
  }

  setTimeout(fn, ms) {
    const id = this.nextId++;
    this.timers.set(id, { at: this.now + ms, fn });
    return id;
  }

  clearTimeout(id) {
    this.timers.delete(id);
  }

  /** Run every timer due within `ms`, in time order. */
  advance(ms) {
    const until = this.now + ms;
    for (;;) {
      let next = null;
      for (const [id, t] of this.timers) if (t.at <= until && (!next || t.at < next[1].at)) next = [id, t];
      if (!next) break;
      this.timers.delete(next[0]);
      this.now = next[1].at;
      next[1].fn();
    }
    this.now = until;
  }
}

function harness() {
  const clock = new Clock();
  const sockets = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closed = null;
      sockets.push(this);
    }

    send(text) {
      this.sent.push(text);
    }

    close(code) {
      this.closed = code;
      this.readyState = 3;
    }

    // what the server does
    open(
      handshake = { sid: "e1", upgrades: [], pingInterval: 25000, pingTimeout: 20000, maxPayload: 1000000 },
    ) {
      this.readyState = 1;
      this.onmessage({ data: `0${JSON.stringify(handshake)}` });
    }

    receive(text) {
      this.onmessage({ data: text });
    }

    drop(code = 1006) {
      this.readyState = 3;
      this.onclose({ code });
    }
  }
  const statuses = [];
  const client = new SocketIOClient({
    url: "ws://test/v1/socket.io/?EIO=4&transport=websocket",
    namespace: "/admin",
    auth: { app_id: "app_1", admin_token: "t" },
    ackTimeoutMs: 5000,
    WebSocketImpl: FakeWebSocket,
    timers: clock,
  });
  client.onStatus((s) => statuses.push(s));
  const last = () => sockets[sockets.length - 1];
  const connect = () => {
    last().open();
    last().receive('40/admin,{"sid":"a1"}');
  };
  return { clock, sockets, statuses, client, last, connect };
}

test("it connects to the namespace with its auth, answers pings and delivers events", () => {
  const { client, last, statuses } = harness();
  const events = [];
  client.on("message:new", (m) => events.push(m));
  client.open();
  assert.equal(last().url, "ws://test/v1/socket.io/?EIO=4&transport=websocket");
  last().open();
  assert.deepEqual(last().sent, ['40/admin,{"app_id":"app_1","admin_token":"t"}']);
  last().receive('40/admin,{"sid":"a1"}');
  assert.equal(client.connected, true);
  assert.equal(client.sid, "a1");
  assert.deepEqual(
    statuses.map((s) => s.state),
    ["connecting", "connected"],
  );
  last().receive("2");
  assert.equal(last().sent.at(-1), "3");
  last().receive('42/admin,["message:new",{"id":"m1"}]');
  last().receive('42["message:new",{"id":"other namespace"}]');
  assert.deepEqual(events, [{ id: "m1" }]);
});

test("requests are answered by their ack id, or time out", async () => {
  const { client, last, clock, connect } = harness();
  client.open();
  connect();
  const first = client.request("sessions:list", { app_id: "app_1" });
  const second = client.request("ping");
  assert.deepEqual(last().sent.slice(-2), [
    '42/admin,0["sessions:list",{"app_id":"app_1"}]',
    '42/admin,1["ping"]',
  ]);
  last().receive('43/admin,1["pong"]');
  last().receive('43/admin,0[{"success":true,"sessions":[]}]');
  assert.deepEqual(await first, { success: true, sessions: [] });
  assert.equal(await second, "pong");
  const late = client.request("ping");
  clock.advance(5000);
  await assert.rejects(late, AckTimeoutError);
});

test("a dropped connection fails pending requests and comes back after a backoff", async () => {
  const { client, last, clock, sockets, statuses, connect } = harness();
  client.open();
  connect();
  const pending = client.request("ping");
  last().drop();
  await assert.rejects(pending, DisconnectedError);
  assert.equal(client.connected, false);
  const waiting = statuses.at(-1);
  assert.equal(waiting.state, "waiting");
  assert.ok(waiting.delayMs >= 500 && waiting.delayMs <= 1000, String(waiting.delayMs));
  await assert.rejects(client.request("ping"), DisconnectedError);
  assert.equal(client.emit("typing:start", {}), false);
  clock.advance(waiting.delayMs);
  assert.equal(sockets.length, 2);
  // A second failure in a row waits longer (1-2 s).
  last().drop();
  const again = statuses.at(-1);
  assert.equal(again.state, "waiting");
  assert.ok(again.delayMs >= 1000 && again.delayMs <= 2000, String(again.delayMs));
  clock.advance(again.delayMs);
  connect();
  assert.equal(client.connected, true);
});

test("server:shutdown: it leaves at once and comes back after reconnect_delay_ms", () => {
  const { client, last, clock, sockets, statuses, connect } = harness();
  const notices = [];
  client.on("server:shutdown", (n) => notices.push(n));
  client.open();
  connect();
  const old = last();
  old.receive('42/admin,["server:shutdown",{"message":"bye","reconnect_delay_ms":7300}]');
  assert.deepEqual(notices, [{ message: "bye", reconnect_delay_ms: 7300 }]);
  assert.equal(old.sent.at(-1), "41/admin,");
  assert.equal(old.closed, 1000);
  assert.deepEqual(statuses.at(-1), {
    state: "waiting",
    delayMs: 7300,
    reason: "server_shutdown",
    attempt: 0,
  });
  clock.advance(7299);
  assert.equal(sockets.length, 1);
  clock.advance(1);
  assert.equal(sockets.length, 2);
});

test("bad credentials stop it; other refusals are retried", () => {
  const { client, last, clock, sockets, statuses } = harness();
  client.open();
  last().open();
  last().receive('44/admin,{"message":"STORE_UNAVAILABLE"}');
  assert.equal(statuses.at(-1).state, "waiting");
  clock.advance(statuses.at(-1).delayMs);
  assert.equal(sockets.length, 2);
  last().open();
  last().receive('44/admin,{"message":"INVALID_CREDENTIALS"}');
  assert.deepEqual(statuses.at(-1), {
    state: "refused",
    code: "INVALID_CREDENTIALS",
    message: "INVALID_CREDENTIALS",
  });
  clock.advance(60000);
  assert.equal(sockets.length, 2);
});

test("a revoked token (AUTH_EXPIRED) stops it", () => {
  const { client, last, clock, sockets, statuses, connect } = harness();
  client.open();
  connect();
  last().receive('42/admin,["error",{"code":"AUTH_EXPIRED","message":"the admin token was revoked"}]');
  assert.equal(statuses.at(-1).state, "refused");
  assert.equal(statuses.at(-1).code, "AUTH_EXPIRED");
  clock.advance(60000);
  assert.equal(sockets.length, 1);
});

test("silence past pingInterval + pingTimeout, or no answer to CONNECT, means a dead connection", () => {
  const { client, last, clock, sockets, statuses, connect } = harness();
  client.open();
  connect();
  clock.advance(44999);
  assert.equal(client.connected, true);
  clock.advance(1);
  assert.equal(client.connected, false);
  assert.equal(statuses.at(-1).reason, "ping_timeout");
  clock.advance(1000);
  assert.equal(sockets.length, 2);
  // This WebSocket opens but the namespace never answers.
  last().open();
  clock.advance(10000);
  assert.equal(statuses.at(-1).state, "waiting");
  assert.equal(statuses.at(-1).reason, "connect_timeout");
});

test("close() stops everything", () => {
  const { client, last, clock, sockets, statuses, connect } = harness();
  client.open();
  connect();
  client.close();
  assert.equal(last().sent.at(-1), "41/admin,");
  assert.equal(statuses.at(-1).state, "closed");
  clock.advance(120000);
  assert.equal(sockets.length, 1);
});
