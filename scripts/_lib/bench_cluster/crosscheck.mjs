// The cross-node check of scripts/bench-cluster, with the official socket.io-client 4.8,
// before each measurement: one client on each node joins the same room; each says once;
// the other (on the other node, so through Redis) must get exactly that `msg`, and the
// sender must not get its own. `echo` must return its arguments.
//
// Usage: node crosscheck.mjs --urls http://127.0.0.1:P1,http://127.0.0.1:P2 --node-dir DIR
// Prints {"ok": true, ...} on stdout, or the reason on stderr and exits 1 (within 15 s).

import { createRequire } from "node:module";
import { join, resolve } from "node:path";

const opts = { urls: "", "node-dir": "" };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) opts[argv[i].replace(/^--/, "")] = argv[i + 1];
const require = createRequire(join(resolve(opts["node-dir"]), "package.json"));
const { io } = require("socket.io-client");

const fail = (why) => {
  process.stderr.write(`crosscheck: ${why}\n`);
  process.exit(1);
};
setTimeout(() => fail("no answer within 15 s"), 15_000).unref();

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const urls = opts.urls.split(",");
const clients = urls.map((url) =>
  io(url, { path: "/socket.io/", transports: ["websocket"], reconnection: false, forceNew: true }),
);
const got = clients.map(() => []);
await Promise.all(
  clients.map(
    (client, i) =>
      new Promise((ok, ko) => {
        client.on("connect", ok);
        client.on("connect_error", (error) => ko(new Error(`${urls[i]}: ${error.message}`)));
      }),
  ),
).catch((error) => fail(error.message));
clients.forEach((client, i) => client.on("msg", (payload) => got[i].push(payload)));

const echoed = await clients[0].timeout(5000).emitWithAck("echo", { a: 1 }, "two", 3);
if (JSON.stringify(echoed) !== JSON.stringify({ a: 1 })) {
  // emitWithAck resolves with the first argument of the ack
  fail(`echo returned ${JSON.stringify(echoed)}`);
}
for (const client of clients) {
  const joined = await client.timeout(5000).emitWithAck("join", { room: "crosscheck" });
  if (joined !== true) fail(`join returned ${JSON.stringify(joined)}`);
}
// Pub/sub reaches who is subscribed: both nodes are (they listen once subscribed).
const sent = clients.map((_, i) => ({ room: "crosscheck", text: `from node ${i}`, t: i + 0.5 }));
for (let i = 0; i < clients.length; i++) clients[i].emit("say", sent[i]);
const t0 = Date.now();
const expected = clients.length - 1;
while (got.some((list) => list.length < expected) && Date.now() - t0 < 5000) await sleep(10);
await sleep(200); // anything more (a sender's own message) would have come by now
for (let i = 0; i < clients.length; i++) {
  const want = sent.filter((_, j) => j !== i).map((s) => JSON.stringify(s)).sort();
  const have = got[i].map((s) => JSON.stringify(s)).sort();
  if (JSON.stringify(want) !== JSON.stringify(have)) {
    fail(`the client on ${urls[i]} got ${JSON.stringify(have)}, expected ${JSON.stringify(want)}`);
  }
}
const latencyMs = Date.now() - t0;
for (const client of clients) client.close();
process.stdout.write(JSON.stringify({ ok: true, nodes: urls.length, ms: latencyMs }) + "\n");
process.exit(0);
