// The official JS Socket.IO client (socket.io-client, Node), driven by JSON lines.
//
// Run by tests/interop/_peers.py as `node tests/interop/js/driver.mjs`; the Python twin is
// tests/interop/py_driver.py and speaks the same protocol. tests/interop/README.md is the
// full reference; in short (protocol 1):
//
// stdin  (commands), one JSON object per line, each with an `id` chosen by the test:
//   {"id":1,"cmd":"connect","socket":"a","url":"http://127.0.0.1:8000","path":"/socket.io",
//    "namespace":"/client","auth":{...}|null,"transports":["websocket"]|["polling"]|
//    ["polling","websocket"],"reconnection":false,"timeout_ms":5000,"extraHeaders":{...}}
//   {"id":2,"cmd":"emit","socket":"a","name":"echo","args":[...]}
//   {"id":3,"cmd":"emit_with_ack","socket":"a","name":"ack-me","args":[...],"timeout_ms":5000}
//   {"id":4,"cmd":"ack","socket":"a","ack_id":1,"args":[...]}
//   {"id":5,"cmd":"disconnect","socket":"a"}
//   {"id":6,"cmd":"state","socket":"a"}
//   {"id":7,"cmd":"close_all"}
// stdout, one JSON object per line:
//   first line   {"kind":"ready","peer":"js","library":"socket.io-client","version":"4.8.4","protocol":1}
//   replies      exactly one per command, in any order:
//                {"id":..,"ok":true,...fields} | {"id":..,"ok":false,"error":"..."}
//                connect       -> {"result":"connect","sid":..,"transport":..}
//                               | {"result":"connect_error","message":..,"data":..}
//                emit_with_ack -> {"args":[...]}      (error "timeout" when no ack came)
//                state         -> {"connected":bool,"sid":str|null,"transport":str|null}
//   notices      what the server did, in the order the library reported it:
//                {"kind":"event","socket":S,"name":..,"args":[...],"ack_id":K|null}
//                {"kind":"disconnect","socket":S,"reason":".."}
//                {"kind":"connect","socket":S,"sid":"..","transport":".."}   (reconnections)
//                {"kind":"connect_error","socket":S,"message":"..","data":..} (later attempts)
//                {"kind":"upgrade","socket":S,"transport":"websocket"}
// Binary values travel as {"$base64":"..."} both ways (Buffer inside this process).
// EOF on stdin closes every socket and exits.
//
// Each socket name is one Manager (one Engine.IO connection) with one namespace socket.
// Server emits are caught with socket.onAny(): when the server asked for an ack, the
// library passes the ack function as the last argument; we keep it under a per-socket
// `ack_id` (a driver handle, not the wire id) until the test answers with `ack`.

import { createInterface } from "node:readline";
import { createRequire } from "node:module";
import { Manager } from "socket.io-client";

const PROTOCOL = 1;
const require = createRequire(import.meta.url);
const VERSION = require("socket.io-client/package.json").version;

/** name -> {socket, manager, acks: Map<int, fn>, nextAck: int, connected: bool} */
const sockets = new Map();

function write(obj) {
  // stdout is a pipe: writes are synchronous on POSIX, so each line leaves in order.
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function toWire(value) {
  if (Buffer.isBuffer(value)) return { $base64: value.toString("base64") };
  if (value instanceof ArrayBuffer) return { $base64: Buffer.from(value).toString("base64") };
  if (ArrayBuffer.isView(value)) {
    return { $base64: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("base64") };
  }
  if (Array.isArray(value)) return value.map(toWire);
  if (value !== null && typeof value === "object") {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = toWire(v);
    return out;
  }
  return value === undefined ? null : value;
}

function fromWire(value) {
  if (Array.isArray(value)) return value.map(fromWire);
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === "$base64" && typeof value.$base64 === "string") {
      return Buffer.from(value.$base64, "base64");
    }
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = fromWire(v);
    return out;
  }
  return value;
}

class CommandError extends Error {}

function need(cmd, field, type) {
  const v = cmd[field];
  if (type === "array" ? !Array.isArray(v) : typeof v !== type) {
    throw new CommandError(`field ${field} must be ${type === "array" ? "an array" : "a " + type}`);
  }
  return v;
}

function entry(cmd) {
  const name = need(cmd, "socket", "string");
  const e = sockets.get(name);
  if (!e) throw new CommandError(`unknown socket ${JSON.stringify(name)}`);
  return e;
}

function transportOf(e) {
  return e.manager.engine?.transport?.name ?? null;
}

function closeEntry(e) {
  // Stops reconnection too: disconnect() destroys the socket, and a Manager whose sockets are
  // all inactive closes its engine and skips reconnecting.
  e.socket.disconnect();
  e.acks.clear();
}

function connect(cmd, respond) {
  const name = need(cmd, "socket", "string");
  const url = need(cmd, "url", "string");
  const transports = cmd.transports ?? ["polling", "websocket"];
  const timeoutMs = cmd.timeout_ms ?? 5000;
  const old = sockets.get(name);
  if (old) {
    if (old.socket.connected) throw new CommandError(`socket ${JSON.stringify(name)} is connected`);
    closeEntry(old);
    sockets.delete(name);
  }
  const manager = new Manager(url, {
    path: cmd.path ?? "/socket.io",
    transports,
    reconnection: cmd.reconnection ?? false,
    timeout: timeoutMs,
    extraHeaders: cmd.extraHeaders ?? {},
    autoConnect: false,
  });
  // auth null sends a CONNECT packet without a payload, as python-socketio does with auth=None.
  const socket = manager.socket(cmd.namespace ?? "/", cmd.auth == null ? {} : { auth: cmd.auth });
  const e = { socket, manager, acks: new Map(), nextAck: 1 };
  sockets.set(name, e);

  return new Promise((resolve) => {
    let pending = true; // the first outcome is the reply, later ones are notices
    const settle = (reply) => {
      // Written now, not when the promise resolves: the reply must precede the events
      // the server sends right after accepting (they are dispatched in this same tick).
      pending = false;
      clearTimeout(timer);
      respond(reply);
      resolve(null);
    };
    const timer = setTimeout(() => {
      if (!pending) return;
      closeEntry(e);
      settle({ ok: false, error: "timeout" });
    }, timeoutMs);

    manager.on("open", () => {
      // A new engine per (re)connection: listen to each one's upgrade.
      manager.engine.on("upgrade", (transport) => {
        if (sockets.get(name) === e) write({ kind: "upgrade", socket: name, transport: transport.name });
      });
    });
    socket.on("connect", () => {
      const info = { sid: socket.id ?? null, transport: transportOf(e) };
      if (pending) settle({ ok: true, result: "connect", ...info });
      else write({ kind: "connect", socket: name, ...info });
    });
    socket.on("connect_error", (err) => {
      const info = { message: String(err?.message ?? err), data: toWire(err?.data ?? null) };
      if (pending) settle({ ok: true, result: "connect_error", ...info });
      else write({ kind: "connect_error", socket: name, ...info });
    });
    socket.on("disconnect", (reason) => {
      e.acks.clear(); // an ack cannot outlive its session
      write({ kind: "disconnect", socket: name, reason: String(reason) });
    });
    socket.onAny((event, ...args) => {
      let ackId = null;
      if (args.length > 0 && typeof args[args.length - 1] === "function") {
        ackId = e.nextAck++;
        e.acks.set(ackId, args.pop());
      }
      write({ kind: "event", socket: name, name: event, args: toWire(args), ack_id: ackId });
    });
    socket.connect();
  });
}

function emitWithAck(cmd) {
  const e = entry(cmd);
  const name = need(cmd, "name", "string");
  const args = fromWire(need(cmd, "args", "array"));
  const timeoutMs = cmd.timeout_ms ?? 5000;
  return new Promise((resolve) => {
    e.socket.timeout(timeoutMs).emit(name, ...args, (err, ...ackArgs) => {
      resolve(err ? { ok: false, error: "timeout" } : { ok: true, args: toWire(ackArgs) });
    });
  });
}

// Returns the reply, or null when the command already wrote it through `respond`.
async function handle(cmd, respond) {
  switch (cmd.cmd) {
    case "connect":
      return connect(cmd, respond);
    case "emit": {
      const e = entry(cmd);
      e.socket.emit(need(cmd, "name", "string"), ...fromWire(need(cmd, "args", "array")));
      return { ok: true };
    }
    case "emit_with_ack":
      return emitWithAck(cmd);
    case "ack": {
      const e = entry(cmd);
      const ackId = need(cmd, "ack_id", "number");
      const fn = e.acks.get(ackId);
      if (!fn) throw new CommandError(`unknown ack_id ${ackId}`);
      e.acks.delete(ackId);
      fn(...fromWire(need(cmd, "args", "array")));
      return { ok: true };
    }
    case "disconnect":
      closeEntry(entry(cmd));
      return { ok: true };
    case "state": {
      const e = entry(cmd);
      return { ok: true, connected: e.socket.connected, sid: e.socket.id ?? null, transport: transportOf(e) };
    }
    case "close_all":
      for (const e of sockets.values()) closeEntry(e);
      sockets.clear();
      return { ok: true };
    default:
      throw new CommandError(`unknown cmd ${JSON.stringify(cmd.cmd)}`);
  }
}

async function run(line) {
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (err) {
    write({ id: null, ok: false, error: `bad JSON: ${err.message}` });
    return;
  }
  const id = cmd?.id ?? null;
  const respond = (reply) => write({ ...reply, id });
  try {
    const reply = await handle(cmd, respond);
    if (reply !== null) respond(reply);
  } catch (err) {
    respond({ ok: false, error: err instanceof CommandError ? err.message : String(err?.stack ?? err) });
  }
}

write({ kind: "ready", peer: "js", library: "socket.io-client", version: VERSION, protocol: PROTOCOL });
const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
lines.on("line", (line) => {
  if (line.trim() !== "") void run(line);
});
lines.on("close", () => {
  for (const e of sockets.values()) closeEntry(e);
  sockets.clear();
  // Let pending writes and socket closes finish; nothing else keeps the loop alive.
  process.exitCode = 0;
  setTimeout(() => process.exit(0), 200).unref();
});
