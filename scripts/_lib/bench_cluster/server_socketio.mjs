// The baseline node of scripts/bench-cluster: Node.js socket.io 4.8 with the official
// @socket.io/redis-adapter 8.3 in classic mode (createAdapter(pub, sub), node-redis 4).
//
// The bench contract of scripts/_lib/bench/app_replyhq.py, on namespace "/" and path
// "/socket.io/":
//   join {room}          joins the room, acks true;
//   echo (any arguments)  acks with the same arguments;
//   say {room, text, t}   emits `msg` with the payload to the room except the sender
//                         (socket.to(room).emit: on every node, through Redis); no ack.
// Ping 25 s / 60 s and 1,000,000-byte payloads, like the other bench servers.
//
// Usage: node server_socketio.mjs --port N --redis-url redis://127.0.0.1:P --key K
//          --node-dir DIR (where `npm ci` of package-lock.json beside this file put
//          node_modules)
// Listens once both Redis connections are up (the runner waits for the port); logs only
// problems (every line of its log is reported); stops on SIGTERM.

import { createServer } from "node:http";
import { createRequire } from "node:module";
import { join, resolve } from "node:path";

const opts = { port: 0, "redis-url": "", key: "socket.io", "node-dir": "" };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const key = argv[i].replace(/^--/, "");
  if (!(key in opts)) throw new Error(`unknown option ${argv[i]}`);
  opts[key] = argv[i + 1];
}

const require = createRequire(join(resolve(opts["node-dir"]), "package.json"));
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

const pubClient = createClient({ url: opts["redis-url"] });
const subClient = pubClient.duplicate();
for (const [name, client] of [["pub", pubClient], ["sub", subClient]]) {
  client.on("error", (error) => console.error(`redis ${name} client: ${error}`));
}
await Promise.all([pubClient.connect(), subClient.connect()]);

const httpServer = createServer();
const io = new Server(httpServer, {
  path: "/socket.io/",
  serveClient: false,
  pingInterval: 25_000,
  pingTimeout: 60_000,
  maxHttpBufferSize: 1_000_000,
  perMessageDeflate: false,
  adapter: createAdapter(pubClient, subClient, { key: opts.key }),
});

io.on("connection", (socket) => {
  socket.on("join", (data, ack) => {
    socket.join(String(data.room));
    if (typeof ack === "function") ack(true);
  });
  socket.on("echo", (...args) => {
    const ack = args.pop();
    if (typeof ack === "function") ack(...args);
  });
  socket.on("say", (data) => {
    socket.to(String(data.room)).emit("msg", data);
  });
});

httpServer.listen(Number(opts.port), "127.0.0.1");

let stopping = false;
process.on("SIGTERM", () => {
  if (stopping) process.exit(143);
  stopping = true;
  // Closes every client connection, then the HTTP server; the adapter unsubscribes.
  io.close(async () => {
    await Promise.allSettled([pubClient.quit(), subClient.quit()]);
    process.exit(0);
  });
  setTimeout(() => process.exit(0), 5_000).unref();
});
