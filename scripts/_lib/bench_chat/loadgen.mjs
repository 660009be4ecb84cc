// The load generator of scripts/bench-chat: devices on /client sending `message:send`.
//
// ROOMS conversations (one device each, created over REST), ROOM_SIZE sockets per
// conversation (connections of that device, so the server puts each in the conversation's
// room: `conversation:joined`), SENDERS of them per room sending, each with at most WINDOW
// messages in flight. A message is in flight from its emit until its ack AND its
// `message:new` on every socket of the room (the sender's included) have arrived; then
// the sender emits the next one (a closed loop).
//
// Two clients: `raw` speaks Engine.IO v4 / Socket.IO v5 text frames over `ws` itself
// (acks and `message:new` are recognised by their first bytes, only `local_id` is read
// out of a delivery); `official` is socket.io-client (every packet JSON-decoded, an
// EventEmitter per socket). Both check the first message of every sender in full.
//
// Usage: node loadgen.mjs --url http://127.0.0.1:PORT --app-id ID --api-key KEY
//          --pid SERVER_PID [--node-dir DIR] [options, see DEFAULTS]
// Prints one JSON object on stdout; progress on stderr, where "#window start" and
// "#window end" mark the measured window (the runner attaches py-spy there).

import { readFileSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";

const HERE = fileURLToPath(new URL(".", import.meta.url));

const DEFAULTS = {
  url: "",
  path: "/v1/socket.io",
  "app-id": "",
  "api-key": "",
  pid: 0,
  hz: 100, // clock ticks per second of /proc/PID/stat (getconf CLK_TCK)
  "node-dir": resolve(HERE, "../../../tests/interop/js"),
  client: "raw", // raw | official
  rooms: 20,
  "room-size": 10,
  senders: 5, // per room
  window: 2, // in-flight messages per sender
  warmup: 2,
  duration: 10,
  drain: 5,
  "connect-concurrency": 50,
  "connect-timeout": 30,
  deadline: 120, // the whole run, seconds: past it the process exits (status 3)
  body: "Hello! Is my order on its way?",
  tag: "run",
  "db-name": "", // PostgreSQL: the database whose backend processes' CPU is reported
};

function parseArgs(argv) {
  const opts = { ...DEFAULTS };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const key = arg.slice(2);
    if (!arg.startsWith("--") || !(key in DEFAULTS)) throw new Error(`unknown argument ${arg}`);
    const value = argv[++i];
    if (value === undefined) throw new Error(`${arg} needs a value`);
    opts[key] = typeof DEFAULTS[key] === "number" ? Number(value) : value;
  }
  for (const key of ["url", "app-id", "api-key"]) {
    if (!opts[key]) throw new Error(`--${key} is required`);
  }
  if (!["raw", "official"].includes(opts.client)) throw new Error("--client is raw or official");
  if (opts.senders > opts["room-size"]) throw new Error("--senders exceeds --room-size");
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const require = createRequire(join(resolve(opts["node-dir"]), "package.json"));

const now = () => performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...parts) => process.stderr.write(parts.join(" ") + "\n");
const round = (x, digits = 3) => (x === null || x === undefined ? null : Number(x.toFixed(digits)));

// Whatever happens, the process ends: the runner also kills it, but must not have to.
setTimeout(() => {
  log(`loadgen: deadline of ${opts.deadline} s reached`);
  process.exit(3);
}, opts.deadline * 1000).unref();

// --- CPU and memory, from /proc --------------------------------------------------------------

function cpuTicksOf(statText, part = "both") {
  // utime and stime are fields 14 and 15 (proc(5)); the command may contain spaces.
  const fields = statText.slice(statText.lastIndexOf(")") + 2).split(" ");
  if (part === "system") return Number(fields[12]);
  return Number(fields[11]) + Number(fields[12]);
}

function serverThreads() {
  // ticks by thread id: the main thread (id = pid) runs Trio; the others are worker threads
  // (SQLite's connection, Trio's thread cache).
  const threads = {};
  let names = [];
  try {
    names = readdirSync(`/proc/${opts.pid}/task`);
  } catch {
    return threads;
  }
  for (const tid of names) {
    try {
      threads[tid] = cpuTicksOf(readFileSync(`/proc/${opts.pid}/task/${tid}/stat`, "latin1"));
    } catch {
      // the thread ended meanwhile
    }
  }
  return threads;
}

function serverSchedstat() {
  // [ns on a CPU, ns waiting for a CPU (runnable)] of the main thread and of the others,
  // from /proc/PID/task/TID/schedstat.
  const sums = { main: [0, 0], workers: [0, 0] };
  let tids = [];
  try {
    tids = readdirSync(`/proc/${opts.pid}/task`);
  } catch {
    return sums;
  }
  for (const tid of tids) {
    try {
      const [cpu, wait] = readFileSync(`/proc/${opts.pid}/task/${tid}/schedstat`, "latin1").split(" ").map(Number);
      const sum = Number(tid) === opts.pid ? sums.main : sums.workers;
      sum[0] += cpu;
      sum[1] += wait;
    } catch {
      // the thread ended meanwhile
    }
  }
  return sums;
}

function mainThreadSystemTicks() {
  try {
    return cpuTicksOf(readFileSync(`/proc/${opts.pid}/task/${opts.pid}/stat`, "latin1"), "system");
  } catch {
    return 0;
  }
}

function serverMemoryKiB() {
  const status = readFileSync(`/proc/${opts.pid}/status`, "latin1");
  const field = (name) => {
    const match = new RegExp(`${name}:\\s+(\\d+)\\s+kB`).exec(status);
    return match ? Number(match[1]) : null;
  };
  return { rss: field("VmRSS"), hwm: field("VmHWM") };
}

function machineJiffies() {
  // The "cpu" line of /proc/stat: busy (everything but idle and iowait), iowait, total.
  const line = readFileSync("/proc/stat", "latin1").split("\n", 1)[0];
  const f = line.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - f[3] - f[4], iowait: f[4], total };
}

function databaseBackends() {
  // ticks by pid of the PostgreSQL backends serving our database: their process title is
  // "postgres: ... USER DBNAME HOST(PORT) STATE".
  const ticks = {};
  if (!opts["db-name"]) return ticks;
  const needle = ` ${opts["db-name"]} `;
  for (const pid of readdirSync("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const title = readFileSync(`/proc/${pid}/cmdline`, "latin1");
      if (!title.startsWith("postgres: ") || !title.includes(needle)) continue;
      ticks[pid] = cpuTicksOf(readFileSync(`/proc/${pid}/stat`, "latin1"));
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return ticks;
}

function genCpuSeconds() {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1e6;
}

class Meter {
  constructor() {
    this.t0 = now();
    this.threads0 = serverThreads();
    this.mainSystem0 = mainThreadSystemTicks();
    this.sched0 = serverSchedstat();
    this.gen0 = genCpuSeconds();
    this.machine0 = machineJiffies();
    this.db0 = databaseBackends();
  }

  stop() {
    const wall = (now() - this.t0) / 1000;
    const threads1 = serverThreads();
    let main = 0;
    let others = 0;
    let busiestOther = 0;
    for (const [tid, ticks] of Object.entries(threads1)) {
      const used = (ticks - (this.threads0[tid] ?? 0)) / opts.hz / wall;
      if (Number(tid) === opts.pid) main = used;
      else {
        others += used;
        busiestOther = Math.max(busiestOther, used);
      }
    }
    const gen = (genCpuSeconds() - this.gen0) / wall;
    const machine1 = machineJiffies();
    const span = machine1.total - this.machine0.total;
    const cores = span / (opts.hz * wall); // jiffies of all cores over the window
    const busy = (machine1.busy - this.machine0.busy) / (opts.hz * wall); // in cores
    const iowait = (machine1.iowait - this.machine0.iowait) / (opts.hz * wall);
    const server = main + others;
    const sched1 = serverSchedstat();
    // Worker threads come and go (Trio's thread cache): their sums may shrink; clamp at 0.
    const waitShare = (who) => Math.max(0, (sched1[who][1] - this.sched0[who][1]) / 1e9 / wall);
    let db = null;
    if (opts["db-name"]) {
      db = 0;
      for (const [pid, ticks] of Object.entries(databaseBackends())) db += ticks - (this.db0[pid] ?? 0);
      db /= opts.hz * wall;
    }
    return {
      wall_s: round(wall),
      server_cpu: round(server), // 1.0 = one core
      server_main_thread_cpu: round(main),
      // of which in the kernel (system calls: epoll, send, recv), 1.0 = one core
      server_main_thread_system_cpu: round((mainThreadSystemTicks() - this.mainSystem0) / opts.hz / wall),
      server_other_threads_cpu: round(others),
      // runnable but not on a CPU (the CPUs were busy with something else), 1.0 = one core
      server_main_thread_runqueue_wait: round(waitShare("main")),
      server_other_threads_runqueue_wait: round(waitShare("workers")),
      server_busiest_other_thread_cpu: round(busiestOther),
      gen_cpu: round(gen),
      machine_cores: round(cores, 2),
      machine_busy: round(busy), // in cores, everything
      machine_iowait: round(iowait),
      other_cpu: round(Math.max(0, busy - server - gen)), // PostgreSQL, kernel threads, the rest
      db_cpu: round(db), // the PostgreSQL backends of our database (part of other_cpu)
      db_backends: opts["db-name"] ? Object.keys(databaseBackends()).length : null,
    };
  }
}

// What the server's threads are doing, sampled every 10 ms from /proc/PID/task/TID/wchan
// (the kernel function a sleeping thread waits in; "0" when on a CPU or runnable) and, for
// Trio's worker threads, /proc/PID/task/TID/comm (Trio names an idle worker "Trio thread N"
// and a busy one after its job, e.g. SQLite's "run_batch from ..."). The Trio thread:
// running, waiting in epoll_wait (nothing to do) or on a futex (the GIL). A worker:
// running its job, waiting in its job on a futex (the GIL) or the disk (fsync), or idle.
class ThreadStates {
  constructor() {
    this.main = {};
    this.workers = {};
    this.mainSamples = 0;
    this.workerSamples = 0;
    this.timer = setInterval(() => this.sample(), 10);
  }

  static kind(wchan) {
    if (wchan === "0" || wchan === "") return "running";
    if (wchan.includes("epoll")) return "epoll_wait";
    if (wchan.includes("futex")) return "futex (GIL)";
    if (/folio|bio|jbd2|flush|writeback|sync|io_schedule|blk|page_bit/.test(wchan)) return "disk";
    return `other:${wchan}`;
  }

  sample() {
    let tids;
    try {
      tids = readdirSync(`/proc/${opts.pid}/task`);
    } catch {
      return;
    }
    for (const tid of tids) {
      let wchan;
      try {
        wchan = readFileSync(`/proc/${opts.pid}/task/${tid}/wchan`, "latin1").trim();
      } catch {
        continue; // the thread ended
      }
      let kind = ThreadStates.kind(wchan);
      if (Number(tid) !== opts.pid) {
        let comm = "";
        try {
          comm = readFileSync(`/proc/${opts.pid}/task/${tid}/comm`, "latin1").trim();
        } catch {
          continue;
        }
        kind = comm.startsWith("Trio thread") ? (kind === "running" ? "idle (running)" : "idle") : `job: ${kind}`;
      }
      if (Number(tid) === opts.pid) {
        this.main[kind] = (this.main[kind] ?? 0) + 1;
        this.mainSamples++;
      } else {
        this.workers[kind] = (this.workers[kind] ?? 0) + 1;
        this.workerSamples++;
      }
    }
  }

  stop(wallSeconds) {
    clearInterval(this.timer);
    const shares = (counts, n) =>
      Object.fromEntries(
        Object.entries(counts)
          .sort((a, b) => b[1] - a[1])
          .map(([k, v]) => [k, round(v / Math.max(1, n), 3)]),
      );
    const ticks = Math.max(1, this.mainSamples);
    return {
      samples: this.mainSamples,
      main: shares(this.main, this.mainSamples),
      // worker threads: shares of all worker samples, and how many threads on average
      workers: shares(this.workers, this.workerSamples),
      worker_threads_avg: round(this.workerSamples / ticks, 2),
      seconds: round(wallSeconds),
    };
  }
}

function quantiles(samples) {
  if (samples.length === 0) return { n: 0, p50_ms: null, p95_ms: null, p99_ms: null, max_ms: null };
  const sorted = Float64Array.from(samples).sort();
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
  return {
    n: sorted.length,
    p50_ms: round(at(0.5), 2),
    p95_ms: round(at(0.95), 2),
    p99_ms: round(at(0.99), 2),
    max_ms: round(sorted[sorted.length - 1], 2),
  };
}

// --- the run's bookkeeping ----------------------------------------------------------------

const stats = {
  disconnects: 0, // connections closed that we did not close
  connectErrors: 0,
  ackErrors: 0, // acks without success: true
  mismatches: 0, // a checked message whose ack or delivery differs from what was sent
  unknownDeliveries: 0, // message:new for no message in flight (duplicates, strays)
  unexpected: 0, // frames we did not expect
  samples: [], // the first few problems, as text
};

function problem(kind, text) {
  stats[kind]++;
  if (stats.samples.length < 8) stats.samples.push(`${kind}: ${String(text).slice(0, 300)}`);
}

const inflight = new Map(); // local_id -> Message
const run = {
  sending: false,
  checking: true, // decode and check everything (the first message of each sender)
  windowStart: Infinity,
  windowEnd: Infinity,
  sent: 0,
  completed: 0,
  completedInWindow: 0,
  e2e: [], // emit -> the last socket's message:new, ms (messages emitted in the window)
  ack: [], // emit -> ack, ms (idem)
  perSecond: [], // completions per second of the window
};

class Message {
  constructor(sender, localId) {
    this.sender = sender;
    this.localId = localId;
    this.t0 = now();
    this.ackMs = -1;
    this.got = 0;
  }
}

function finish(message) {
  inflight.delete(message.localId);
  const t = now();
  run.completed++;
  if (t >= run.windowStart && t < run.windowEnd) {
    run.completedInWindow++;
    const second = Math.floor((t - run.windowStart) / 1000);
    run.perSecond[second] = (run.perSecond[second] ?? 0) + 1;
  }
  if (message.t0 >= run.windowStart && message.t0 < run.windowEnd) {
    run.e2e.push(t - message.t0);
    run.ack.push(message.ackMs);
  }
  const sender = message.sender;
  sender.inflight--;
  sender.resolveIdle?.();
  if (run.sending) sender.send();
}

function onAck(message, ok, detail) {
  if (!ok) problem("ackErrors", detail());
  message.ackMs = now() - message.t0;
  if (message.got === message.sender.room.size) finish(message);
}

function onDelivery(socket, localId, detail) {
  const message = inflight.get(localId);
  if (message === undefined || message.sender.room !== socket.room) {
    problem("unknownDeliveries", `${localId} ${detail?.() ?? ""}`);
    return;
  }
  message.got++;
  if (message.got === socket.room.size && message.ackMs >= 0) finish(message);
}

function checkAck(message, ack) {
  const m = ack?.message;
  if (ack?.success !== true || m?.local_id !== message.localId || m?.body !== opts.body ||
      m?.conversation_id !== message.sender.room.conversationId || typeof m?.id !== "string") {
    problem("mismatches", `ack ${JSON.stringify(ack)}`);
  }
}

function checkDelivery(socket, payload) {
  if (payload?.body !== opts.body || payload?.conversation_id !== socket.room.conversationId ||
      payload?.sender !== "user") {
    problem("mismatches", `message:new ${JSON.stringify(payload)}`);
  }
}

// --- the raw client: Socket.IO frames by hand over ws ------------------------------------------

const NS = "/client";
const EVENT_PREFIX = Buffer.from(`42${NS},[`);
const NEW_PREFIX = Buffer.from(`42${NS},["message:new",`);
const LOCAL_ID_KEY = Buffer.from('"local_id":"');
const ACK_OK = Buffer.from('[{"success":true');
const ACK_AT = `43${NS},`.length;
const CH_0 = 0x30;
const CH_LBRACKET = 0x5b;
const QUOTE = 0x22;

class RawSocket {
  constructor(room) {
    this.room = room;
    this.ws = null;
    this.nextAck = 0;
    this.acks = new Map(); // ack id -> Message
    this.closing = false;
    this.open = false;
  }

  connect() {
    const WebSocket = require("ws");
    const url = `${opts.url.replace(/^http/, "ws")}${opts.path}/?EIO=4&transport=websocket`;
    const auth = JSON.stringify(this.room.auth);
    return new Promise((resolveJoin, rejectJoin) => {
      const ws = new WebSocket(url, { perMessageDeflate: false, skipUTF8Validation: true });
      this.ws = ws;
      let connected = false;
      let settled = false;
      const fail = (error) => {
        if (!settled) {
          settled = true;
          rejectJoin(error);
        }
      };
      ws.on("error", fail);
      ws.on("close", () => {
        if (this.open && !this.closing) problem("disconnects", `raw socket of ${this.room.deviceId}`);
        this.open = false;
        fail(new Error("closed before joining"));
      });
      ws.on("message", (data) => {
        const c0 = data[0];
        if (c0 === 0x34) {
          const c1 = data[1];
          if (c1 === 0x32) {
            if (data.compare(NEW_PREFIX, 0, NEW_PREFIX.length, 0, NEW_PREFIX.length) === 0) {
              this.onNew(data);
            } else if (data.compare(EVENT_PREFIX, 0, EVENT_PREFIX.length, 0, EVENT_PREFIX.length) === 0) {
              const [name, payload] = JSON.parse(data.toString("utf8", EVENT_PREFIX.length - 1));
              if (name === "connected") connected = true;
              else if (name === "conversation:joined" && connected && !settled) {
                if (payload.conversation_id !== this.room.conversationId) {
                  fail(new Error(`joined ${payload.conversation_id}, not ${this.room.conversationId}`));
                } else {
                  settled = true;
                  this.open = true;
                  resolveJoin(this);
                }
              } else problem("unexpected", data.toString("utf8", 0, 300));
            } else problem("unexpected", data.toString("utf8", 0, 300));
          } else if (c1 === 0x33) {
            this.onAck(data);
          } else if (c1 === 0x30) {
            // CONNECT accepted on /client: `connected` and `conversation:joined` follow
          } else if (c1 === 0x34) {
            fail(new Error(`connect_error ${data.toString("utf8")}`));
          } else {
            problem("unexpected", data.toString("utf8", 0, 300));
          }
        } else if (c0 === 0x32) {
          ws.send("3"); // Engine.IO ping -> pong
        } else if (c0 === CH_0) {
          ws.send(`40${NS},${auth}`); // Engine.IO open -> Socket.IO CONNECT to /client
        } else {
          problem("unexpected", data.toString("utf8", 0, 300));
        }
      });
    });
  }

  onNew(data) {
    if (run.checking) {
      const [, payload] = JSON.parse(data.toString("utf8", EVENT_PREFIX.length - 1));
      checkDelivery(this, payload);
      onDelivery(this, payload.local_id, () => JSON.stringify(payload));
      return;
    }
    const start = data.indexOf(LOCAL_ID_KEY, NEW_PREFIX.length) + LOCAL_ID_KEY.length;
    const end = data.indexOf(QUOTE, start);
    onDelivery(this, data.toString("latin1", start, end), () => data.toString("utf8", 0, 300));
  }

  onAck(data) {
    let i = ACK_AT;
    let id = 0;
    while (data[i] !== CH_LBRACKET) id = id * 10 + (data[i++] - CH_0);
    const message = this.acks.get(id);
    if (message === undefined) return problem("unexpected", data.toString("utf8", 0, 300));
    this.acks.delete(id);
    if (run.checking) {
      const [ack] = JSON.parse(data.toString("utf8", i));
      checkAck(message, ack);
      onAck(message, ack?.success === true, () => JSON.stringify(ack));
      return;
    }
    const ok = data.compare(ACK_OK, 0, ACK_OK.length, i, i + ACK_OK.length) === 0;
    onAck(message, ok, () => data.toString("utf8", i, i + 300));
  }

  send(message, frameTail) {
    const id = this.nextAck++;
    this.acks.set(id, message);
    this.ws.send(`42${NS},${id}["message:send",${frameTail}]`);
  }

  close() {
    this.closing = true;
    this.ws?.close();
  }
}

// --- the official client: socket.io-client ------------------------------------------------------

class OfficialSocket {
  constructor(room) {
    this.room = room;
    this.socket = null;
    this.closing = false;
  }

  connect() {
    const { io } = require("socket.io-client");
    return new Promise((resolveJoin, rejectJoin) => {
      const socket = io(`${opts.url}${NS}`, {
        path: opts.path,
        transports: ["websocket"],
        auth: this.room.auth,
        forceNew: true,
        reconnection: false,
        timeout: opts["connect-timeout"] * 1000,
      });
      this.socket = socket;
      let settled = false;
      socket.on("connect_error", (error) => {
        if (!settled) {
          settled = true;
          rejectJoin(error);
        }
      });
      socket.on("disconnect", (reason) => {
        if (!this.closing) problem("disconnects", `official socket: ${reason}`);
      });
      socket.on("conversation:joined", (payload) => {
        if (settled) return;
        settled = true;
        if (payload.conversation_id !== this.room.conversationId) {
          rejectJoin(new Error(`joined ${payload.conversation_id}, not ${this.room.conversationId}`));
        } else resolveJoin(this);
      });
      socket.on("message:new", (payload) => {
        if (run.checking) checkDelivery(this, payload);
        onDelivery(this, payload.local_id, () => JSON.stringify(payload));
      });
    });
  }

  send(message, _frameTail, payload) {
    this.socket.emit("message:send", payload, (ack) => {
      if (run.checking) checkAck(message, ack);
      onAck(message, ack?.success === true, () => JSON.stringify(ack));
    });
  }

  close() {
    this.closing = true;
    this.socket?.disconnect();
  }
}

// --- rooms and senders ------------------------------------------------------------------------

class Sender {
  constructor(room, socket, index) {
    this.room = room;
    this.socket = socket;
    this.index = index;
    this.seq = 0;
    this.inflight = 0;
    this.resolveIdle = null;
    this.prefix = `{"conversation_id":${JSON.stringify(room.conversationId)},"local_id":"`;
    this.suffix = `","body":${JSON.stringify(opts.body)}}`;
  }

  send() {
    if (this.inflight >= opts.window) return;
    const localId = `${opts.tag}-${this.index}-${this.seq++}`;
    const message = new Message(this, localId);
    inflight.set(localId, message);
    this.inflight++;
    run.sent++;
    const payload = opts.client === "official"
      ? { conversation_id: this.room.conversationId, local_id: localId, body: opts.body }
      : null;
    this.socket.send(message, `${this.prefix}${localId}${this.suffix}`, payload);
  }

  idle() {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((r) => {
      this.resolveIdle = () => {
        if (this.inflight === 0) r();
      };
    });
  }
}

async function createConversation(deviceId) {
  const response = await fetch(`${opts.url}/v1/conversations`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "x-app-id": opts["app-id"],
      "x-device-id": deviceId,
      "x-api-key": opts["api-key"],
    },
    body: "{}",
    signal: AbortSignal.timeout(opts["connect-timeout"] * 1000),
  });
  const body = await response.json();
  if (response.status !== 201 || typeof body.id !== "string") {
    throw new Error(`POST /v1/conversations: ${response.status} ${JSON.stringify(body)}`);
  }
  return body.id;
}

async function setUp() {
  const rooms = [];
  for (let r = 0; r < opts.rooms; r++) {
    const deviceId = `bench-${opts.tag}-device-${r}`;
    rooms.push({
      index: r,
      deviceId,
      conversationId: await createConversation(deviceId),
      auth: { app_id: opts["app-id"], device_id: deviceId, api_key: opts["api-key"] },
      size: opts["room-size"],
      sockets: [],
    });
  }
  const Socket = opts.client === "official" ? OfficialSocket : RawSocket;
  const pending = rooms.flatMap((room) => Array.from({ length: room.size }, () => room));
  let next = 0;
  const connectOne = async () => {
    while (next < pending.length) {
      const room = pending[next++];
      const socket = new Socket(room);
      room.sockets.push(socket);
      try {
        await socket.connect();
      } catch (error) {
        stats.connectErrors++;
        throw error;
      }
    }
  };
  const t0 = now();
  const workers = Array.from({ length: Math.min(opts["connect-concurrency"], pending.length) }, connectOne);
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error("connecting took too long")), opts["connect-timeout"] * 1000);
  });
  await Promise.race([Promise.all(workers), timeout]);
  clearTimeout(timer);
  const connectSeconds = (now() - t0) / 1000;
  const senders = [];
  for (const room of rooms) {
    for (let k = 0; k < opts.senders; k++) senders.push(new Sender(room, room.sockets[k], senders.length));
  }
  return { rooms, senders, connectSeconds };
}

async function withTimeout(promise, seconds, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took more than ${seconds} s`)), seconds * 1000);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function main() {
  const { rooms, senders, connectSeconds } = await setUp();
  log(`  ${rooms.length} conversations, ${rooms.length * opts["room-size"]} sockets (${opts.client}) in ${connectSeconds.toFixed(1)} s`);

  // One message per sender, decoded and checked in full, before the load starts.
  for (const sender of senders) sender.send();
  await withTimeout(Promise.all(senders.map((s) => s.idle())), opts.drain, "the checked first messages");
  run.checking = false;
  const problemsBefore = stats.mismatches + stats.ackErrors + stats.unknownDeliveries;
  if (problemsBefore) throw new Error(`the first messages failed their checks: ${stats.samples.join(" | ")}`);

  // The load: warm-up, then the measured window, then a drain.
  run.sending = true;
  for (const sender of senders) for (let k = 0; k < opts.window; k++) sender.send();
  await sleep(opts.warmup * 1000);
  const sentBefore = run.sent;
  run.windowStart = now();
  run.windowEnd = run.windowStart + opts.duration * 1000;
  log("#window start");
  const meter = new Meter();
  const states = new ThreadStates();
  const rss = [];
  while (now() < run.windowEnd) {
    await sleep(Math.min(1000, Math.max(1, run.windowEnd - now())));
    rss.push(serverMemoryKiB().rss);
  }
  const m = meter.stop();
  const threadStates = states.stop(m.wall_s);
  log("#window end");
  const memory = serverMemoryKiB();
  const sentInWindow = run.sent - sentBefore;
  run.sending = false;
  const drainStart = now();
  while (inflight.size > 0 && now() - drainStart < opts.drain * 1000) await sleep(5);
  const drainSeconds = (now() - drainStart) / 1000;
  const lost = inflight.size;
  for (const room of rooms) for (const socket of room.sockets) socket.close();

  const e2e = quantiles(run.e2e);
  const ack = quantiles(run.ack);
  const result = {
    client: opts.client,
    client_version: opts.client === "official"
      ? require("socket.io-client/package.json").version
      : `ws ${require("ws/package.json").version}`,
    node: process.version,
    rooms: opts.rooms,
    room_size: opts["room-size"],
    senders: senders.length,
    window: opts.window,
    in_flight_max: senders.length * opts.window,
    connect_s: round(connectSeconds),
    warmup_s: opts.warmup,
    duration_s: m.wall_s,
    sent_in_window: sentInWindow,
    completed_in_window: run.completedInWindow,
    msgs_per_s: round(run.completedInWindow / m.wall_s, 1),
    deliveries_per_s: round((run.completedInWindow * opts["room-size"]) / m.wall_s, 1),
    per_second: run.perSecond.slice(0, Math.floor(opts.duration)),
    latency: e2e,
    ack_latency: ack,
    cpu: m,
    thread_states: threadStates,
    server_rss_kib: memory.rss,
    server_rss_max_in_window_kib: Math.max(...rss.filter((x) => x !== null), memory.rss ?? 0),
    server_rss_peak_kib: memory.hwm,
    drain_s: round(drainSeconds),
    lost,
    sent_total: run.sent,
    completed_total: run.completed,
    disconnects: stats.disconnects,
    connect_errors: stats.connectErrors,
    ack_errors: stats.ackErrors,
    mismatches: stats.mismatches,
    unknown_deliveries: stats.unknownDeliveries,
    unexpected_frames: stats.unexpected,
    problems: stats.samples,
  };
  process.stdout.write(JSON.stringify(result) + "\n");
  await sleep(200); // let the close frames go out
  process.exit(0);
}

main().catch((error) => {
  log(`loadgen: ${error.stack || error}`);
  if (stats.samples.length) log(`loadgen: ${stats.samples.join("\n  ")}`);
  process.exit(1);
});
