// A Node.js socket.io server with the official Redis adapter (classic pub/sub), and the
// official Redis emitter, for the mixed-fleet tests: our nodes and this one share one
// Redis, and the tests drive this one over HTTP.
//
//   node node_fleet.mjs PORT REDIS_URL KEY
//
// Sockets of namespaces /client and /admin join the rooms listed in their auth
// (`{rooms: [...]}`). Routes (JSON bodies; `{"$base64": ...}` stands for binary):
//   POST /emit       {namespace, rooms, except, event, args}  io.of(ns).to(rooms).emit
//   POST /emit-ack   {namespace, rooms, event, args, timeout}  ... .timeout(t).emitWithAck
//   POST /emitter    {namespace, rooms, event, args}           the @socket.io/redis-emitter
//   POST /join       {namespace, rooms, join}                  io.of(ns).in(rooms).socketsJoin
//   GET  /fetch?namespace=NS                                   fetchSockets: [{id, rooms}]
//   GET  /count?namespace=NS                                   the adapter's serverCount
// It prints "ready PORT" once listening.

import http from "node:http";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-adapter";
import { Emitter } from "@socket.io/redis-emitter";
import { createClient } from "redis";

const [port, redisUrl, key] = process.argv.slice(2);

function fromWire(value) {
  if (Array.isArray(value)) return value.map(fromWire);
  if (value && typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === "$base64") return Buffer.from(value.$base64, "base64");
    return Object.fromEntries(keys.map((k) => [k, fromWire(value[k])]));
  }
  return value;
}

function toWire(value) {
  if (Buffer.isBuffer(value)) return { $base64: value.toString("base64") };
  if (Array.isArray(value)) return value.map(toWire);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toWire(v)]));
  }
  return value;
}

const pub = createClient({ url: redisUrl });
const sub = pub.duplicate();
const emitterClient = pub.duplicate();
for (const client of [pub, sub, emitterClient]) client.on("error", () => {});
await Promise.all([pub.connect(), sub.connect(), emitterClient.connect()]);
const emitter = new Emitter(emitterClient, { key });

async function body(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : {};
}

function target(namespace, rooms, except) {
  let operator = io.of(namespace);
  if (rooms && rooms.length) operator = operator.to(rooms);
  if (except && except.length) operator = operator.except(except);
  return operator;
}

async function route(req, url) {
  const ns = url.searchParams.get("namespace") || "/client";
  if (req.method === "GET" && url.pathname === "/count") {
    return { count: await io.of(ns).adapter.serverCount() };
  }
  if (req.method === "GET" && url.pathname === "/fetch") {
    const sockets = await io.of(ns).fetchSockets();
    return { sockets: sockets.map((s) => ({ id: s.id, rooms: [...s.rooms] })) };
  }
  const b = await body(req);
  const args = fromWire(b.args || []);
  if (url.pathname === "/emit") {
    target(b.namespace, b.rooms, b.except).emit(b.event, ...args);
    return { ok: true };
  }
  if (url.pathname === "/emit-ack") {
    try {
      const responses = await target(b.namespace, b.rooms)
        .timeout(b.timeout)
        .emitWithAck(b.event, ...args);
      return { responses: toWire(responses) };
    } catch (error) {
      return { error: String(error.message), responses: toWire(error.responses || []) };
    }
  }
  if (url.pathname === "/emitter") {
    let operator = emitter.of(b.namespace);
    if (b.rooms && b.rooms.length) operator = operator.to(b.rooms);
    operator.emit(b.event, ...args);
    return { ok: true };
  }
  if (url.pathname === "/join") {
    io.of(b.namespace).in(b.rooms).socketsJoin(b.join);
    return { ok: true };
  }
  return null;
}

const httpServer = http.createServer(async (req, res) => {
  try {
    const result = await route(req, new URL(req.url, "http://localhost"));
    res.writeHead(result === null ? 404 : 200, { "content-type": "application/json" });
    res.end(JSON.stringify(result ?? { error: "no such route" }));
  } catch (error) {
    res.writeHead(500, { "content-type": "application/json" });
    res.end(JSON.stringify({ error: String(error) }));
  }
});

const io = new Server(httpServer, {
  path: "/v1/socket.io",
  adapter: createAdapter(pub, sub, { key }),
});
for (const name of ["/client", "/admin"]) {
  io.of(name).on("connection", (socket) => {
    for (const room of socket.handshake.auth?.rooms || []) socket.join(room);
  });
}

process.on("SIGTERM", async () => {
  io.close();
  await Promise.allSettled([pub.quit(), sub.quit(), emitterClient.quit()]);
  process.exit(0);
});

httpServer.listen(Number(port), "127.0.0.1", () => {
  console.log(`ready ${port}`);
});
