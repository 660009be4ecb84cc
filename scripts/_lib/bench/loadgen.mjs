// The load generator of scripts/bench and scripts/bench-cluster: Engine.IO v4 / Socket.IO
// v5 over `ws`, by hand.
//
// A real client library costs more per message than the servers under test, so this
// speaks the text frames itself: answers the server's ping "2" with "3", connects to "/"
// with "40", emits `42<id>["event",...]` and reads acks `43<id>[...]`. Incoming frames are
// classified by their first bytes and `msg` deliveries are read without JSON.parse
// (only the send timestamp `t` is extracted).
//
// Usage: node loadgen.mjs <ack|fanout|memory> --url ws://127.0.0.1:PORT/socket.io/
//          --pid SERVER_PID [--node-dir DIR] [scenario options, see DEFAULTS]
// Prints one JSON object (the results) on stdout; progress on stderr. Lines on stderr
// starting with "#window " mark the start of a measured window (the runner attaches a
// profiler there).
//
// Across nodes (scripts/bench-cluster), "fanout" only:
//   node loadgen.mjs fanout --urls ws://127.0.0.1:P1/socket.io/?EIO=4&transport=websocket,...
//          --pids PID1,PID2 --redis-pid PID --redis-port PORT [--node-dir DIR] [options]
// What --urls changes:
// * client i connects to node floor(i / rooms) % nodes while its room is i % rooms, so
//   every room has members on every node (evenly when conns is a multiple of
//   rooms * nodes), and senders, taken in turn from each room, are on every node;
// * the text of a `say` ends with its sender's node ("... n0"), so each delivery counts
//   as local (same node) or cross-node (through Redis), with a latency histogram each;
// * --pids: the CPU of every node (summed, and each), --redis-pid: Redis's CPU;
//   --redis-port: `INFO commandstats` and `INFO stats` before and after every step
//   (commands and bytes per `say`);
// * the machine's CPU outside our processes instead of per core's; --quiet-wait and
//   --noisy-retries (off by default) wait for quiet before a step and retry failures seen
//   under other workloads;
// * the ladder stops for the generator when the generator and Redis (which share its core)
//   would exceed --gen-cap of it at the next step.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { createConnection } from "node:net";
import { join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";

const HERE = fileURLToPath(new URL(".", import.meta.url));

const DEFAULTS = {
  url: "",
  pid: 0,
  // across nodes (instead of url and pid)
  urls: "",
  pids: "",
  "redis-pid": 0,
  "redis-port": 0,
  hz: 100, // clock ticks per second of /proc/PID/stat (getconf CLK_TCK)
  "node-dir": resolve(HERE, "../../../.bench/node"),
  conns: 0,
  // ack
  warmup: 2,
  duration: 10,
  // fanout
  rooms: 10,
  rates: "80,160",
  drain: 5,
  "p95-ms": 100,
  "min-delivered": 0.999,
  "min-sent": 0.97,
  retries: 1,
  // Other workloads on the machine (drills, builds), with --urls: before each step, wait up
  // to quiet-wait s for the machine to be busy less than quiet-busy cores outside our
  // processes; a step that fails while others took noisy-other cores or more is run again,
  // up to noisy-retries times.
  "quiet-wait": 0,
  "quiet-busy": 0.15,
  "noisy-other": 0.25,
  "noisy-retries": 0,
  // stop when the generator (+ Redis) would exceed this share of its core next step
  "gen-cap": 0.97,
  "no-stop": false, // run every rate (profiling at a fixed rate)
  text: "hello from the bench",
  // memory
  warm: 20,
  hold: 15,
  concurrency: 200,
};

function parseArgs(argv) {
  const opts = { ...DEFAULTS };
  const positional = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith("--")) {
      positional.push(arg);
      continue;
    }
    const key = arg.slice(2);
    if (!(key in DEFAULTS)) throw new Error(`unknown option ${arg}`);
    if (typeof DEFAULTS[key] === "boolean") {
      opts[key] = true;
    } else {
      const value = argv[++i];
      opts[key] = typeof DEFAULTS[key] === "number" ? Number(value) : value;
    }
  }
  opts.scenario = positional[0];
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
// Across nodes when --urls is given; one server (--url, --pid) otherwise.
const CLUSTER = opts.urls !== "";
const URLS = CLUSTER ? opts.urls.split(",").filter(Boolean) : [opts.url];
const PIDS = CLUSTER ? String(opts.pids).split(",").filter(Boolean).map(Number) : [opts.pid];
const require = createRequire(join(resolve(opts["node-dir"]), "package.json"));
const WebSocket = require("ws");
const WS_VERSION = require("ws/package.json").version;

const now = () => performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...parts) => process.stderr.write(parts.join(" ") + "\n");
const round = (x, digits = 3) => (x === null || x === undefined ? null : Number(x.toFixed(digits)));

// --- measurements of the servers, Redis and this process -------------------------------------

function cpuSeconds(pid) {
  if (!pid) return 0;
  const stat = readFileSync(`/proc/${pid}/stat`, "latin1");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state); utime is field 14, stime field 15 (proc(5)).
  return (Number(fields[11]) + Number(fields[12])) / opts.hz;
}

function serverRssKiB() {
  const status = readFileSync(`/proc/${PIDS[0]}/status`, "latin1");
  const match = /VmRSS:\s+(\d+)\s+kB/.exec(status);
  return match ? Number(match[1]) : NaN;
}

// Jiffies from /proc/stat, to see CPU time that is neither the servers', Redis's nor the
// generator's: per core [user+nice+system, irq+softirq, steal, total] for cpu0 and cpu1
// (one server), or over all cores [user+nice+system, irq+softirq, total] (--urls).
function coreJiffies() {
  const lines = readFileSync("/proc/stat", "latin1").split("\n");
  const cores = {};
  for (const line of lines) {
    const m = /^cpu(\d+) (.*)$/.exec(line);
    if (m === null) continue;
    const f = m[2].trim().split(/\s+/).map(Number);
    const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
    cores[m[1]] = [f[0] + f[1] + f[2], f[5] + f[6], f[7], total];
  }
  return cores;
}

function machineJiffies() {
  const line = readFileSync("/proc/stat", "latin1").split("\n", 1)[0];
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  return [f[0] + f[1] + f[2], f[5] + f[6], f.slice(0, 8).reduce((a, b) => a + b, 0)];
}

let CORES = null;
function machineCores() {
  if (CORES === null) CORES = readFileSync("/proc/stat", "latin1").split("\n").filter((l) => /^cpu\d/.test(l)).length;
  return CORES;
}

function genCpuSeconds() {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1e6;
}

class Meter {
  // CPU of the server(s), Redis and the generator over a wall-clock window.
  constructor() {
    this.t0 = now();
    this.nodes0 = PIDS.map(cpuSeconds);
    this.redis0 = cpuSeconds(opts["redis-pid"]);
    this.gen0 = genCpuSeconds();
    if (CLUSTER) this.machine0 = machineJiffies();
    else this.cores0 = coreJiffies();
  }
  stop() {
    const wall = (now() - this.t0) / 1000;
    const nodes = PIDS.map((pid, i) => cpuSeconds(pid) - this.nodes0[i]);
    const server = nodes.reduce((a, b) => a + b, 0);
    const redis = cpuSeconds(opts["redis-pid"]) - this.redis0;
    const gen = genCpuSeconds() - this.gen0;
    const times = {
      wall_s: wall,
      server_cpu_s: server,
      server_cpu: server / wall,
      node_cpu: nodes.map((s) => round(s / wall)),
      redis_cpu_s: redis,
      redis_cpu: redis / wall,
      gen_cpu: gen / wall,
    };
    if (CLUSTER) {
      const m1 = machineJiffies();
      const cores = machineCores();
      const span = m1[2] - this.machine0[2];
      // In cores: busy (tasks + interrupts) and "other" (tasks that are not ours).
      const tasks = span ? ((m1[0] - this.machine0[0]) / span) * cores : null;
      const irq = span ? ((m1[1] - this.machine0[1]) / span) * cores : null;
      times.machine = {
        cores,
        busy_cores: round(tasks === null ? null : tasks + irq),
        other_cores: round(tasks === null ? null : Math.max(0, tasks - (server + redis + gen) / wall)),
      };
      return times;
    }
    const cores1 = coreJiffies();
    const share = (core, i) => {
      const a = this.cores0[core];
      const b = cores1[core];
      if (a === undefined || b === undefined || b[3] === a[3]) return null;
      return (b[i] - a[i]) / (b[3] - a[3]);
    };
    // "other": process time on the core that is not ours (another workload on the host).
    const own = { 0: server / wall, 1: gen / wall };
    const cores = {};
    for (const core of ["0", "1"]) {
      const tasks = share(core, 0);
      cores[`core${core}`] = {
        busy: round((tasks ?? 0) + (share(core, 1) ?? 0)),
        softirq: round(share(core, 1)),
        steal: round(share(core, 2)),
        other: tasks === null ? null : round(Math.max(0, tasks - own[core])),
      };
    }
    times.cores = cores;
    return times;
  }
}

// Latency histogram: 0.05 ms buckets up to 30 s.
class Histogram {
  constructor() {
    this.step = 0.05;
    this.buckets = new Uint32Array(600_000);
    this.count = 0;
    this.max = 0;
  }
  add(ms) {
    let i = Math.floor(ms / this.step);
    if (i < 0) i = 0;
    if (i >= this.buckets.length) i = this.buckets.length - 1;
    this.buckets[i]++;
    this.count++;
    if (ms > this.max) this.max = ms;
  }
  quantile(q) {
    if (this.count === 0) return null;
    const target = Math.ceil(q * this.count);
    let seen = 0;
    for (let i = 0; i < this.buckets.length; i++) {
      seen += this.buckets[i];
      if (seen >= target) return (i + 1) * this.step;
    }
    return this.max;
  }
  summary() {
    const r = (x) => (x === null ? null : Math.round(x * 100) / 100);
    return {
      p50_ms: r(this.quantile(0.5)),
      p95_ms: r(this.quantile(0.95)),
      p99_ms: r(this.quantile(0.99)),
      max_ms: r(this.count ? this.max : null),
    };
  }
}

// Wait (at most quiet-wait s) until the machine's CPU outside our processes is below
// quiet-busy cores, in 0.5 s samples; returns {waited_s, other_cores} of the last sample.
async function waitQuiet() {
  const t0 = now();
  let other = null;
  for (;;) {
    const meter = new Meter();
    await sleep(500);
    other = meter.stop().machine.other_cores;
    if (other === null || other < opts["quiet-busy"] || now() - t0 >= opts["quiet-wait"] * 1000) break;
  }
  return { waited_s: round((now() - t0) / 1000, 1), other_cores: other };
}

// --- Redis's own counters ----------------------------------------------------------------

// One short connection: INFO commandstats, INFO stats; returns {commands: {name: calls},
// net_in, net_out} (bytes).
function redisInfo() {
  if (!opts["redis-port"]) return Promise.resolve(null);
  return new Promise((ok, ko) => {
    const socket = createConnection({ host: "127.0.0.1", port: opts["redis-port"] });
    const chunks = [];
    const timer = setTimeout(() => {
      socket.destroy();
      ko(new Error("Redis INFO: no answer in 5 s"));
    }, 5000);
    const bulks = () => {
      // Two bulk replies: $LEN\r\n<LEN bytes>\r\n each.
      const buffer = Buffer.concat(chunks);
      const out = [];
      let at = 0;
      while (out.length < 2) {
        const eol = buffer.indexOf("\r\n", at);
        if (eol < 0) return null;
        if (buffer[at] !== 0x24) throw new Error(`Redis INFO: ${buffer.toString("latin1", at, eol)}`);
        const length = Number(buffer.toString("latin1", at + 1, eol));
        if (buffer.length < eol + 2 + length + 2) return null;
        out.push(buffer.toString("latin1", eol + 2, eol + 2 + length));
        at = eol + 2 + length + 2;
      }
      return out;
    };
    socket.on("error", (error) => {
      clearTimeout(timer);
      ko(error);
    });
    socket.on("data", (chunk) => {
      chunks.push(chunk);
      let replies;
      try {
        replies = bulks();
      } catch (error) {
        clearTimeout(timer);
        socket.destroy();
        ko(error);
        return;
      }
      if (replies === null) return;
      clearTimeout(timer);
      socket.end();
      const commands = {};
      for (const m of replies[0].matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) commands[m[1]] = Number(m[2]);
      const field = (name) => Number((new RegExp(`^${name}:(\\d+)`, "m").exec(replies[1]) ?? [0, NaN])[1]);
      ok({
        commands,
        net_in: field("total_net_input_bytes"),
        net_out: field("total_net_output_bytes"),
        pubsub_channels: field("pubsub_channels"),
        pubsub_patterns: field("pubsub_patterns"),
      });
    });
    socket.write("*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n*2\r\n$4\r\nINFO\r\n$5\r\nstats\r\n");
  });
}

function redisDelta(before, after, says) {
  if (before === null || after === null) return null;
  const commands = {};
  let total = 0;
  for (const [name, calls] of Object.entries(after.commands)) {
    const delta = calls - (before.commands[name] ?? 0);
    if (delta > 0) {
      commands[name] = delta;
      total += delta;
    }
  }
  // The two INFO calls of the "before" snapshot are counted in the delta: take them out.
  if (commands.info !== undefined) {
    commands.info -= 2;
    total -= 2;
    if (commands.info <= 0) delete commands.info;
  }
  const per = (x) => (says ? round(x / says, 4) : null);
  return {
    says,
    commands,
    commands_total: total,
    commands_per_say: per(total),
    publish_per_say: per(commands.publish ?? 0),
    net_in_bytes: after.net_in - before.net_in,
    net_out_bytes: after.net_out - before.net_out,
    net_in_bytes_per_say: per(after.net_in - before.net_in),
    net_out_bytes_per_say: per(after.net_out - before.net_out),
    pubsub_patterns: after.pubsub_patterns,
    pubsub_channels: after.pubsub_channels,
  };
}

// --- one Socket.IO client ----------------------------------------------------------------

const CH_0 = 0x30;
const CH_2 = 0x32;
const CH_3 = 0x33;
const CH_4 = 0x34;
const CH_LBRACKET = 0x5b;
const MSG_PREFIX = Buffer.from('42["msg"');
const T_KEY = Buffer.from('"t":');

const stats = {
  disconnects: 0, // connections closed that we did not close
  connectErrors: 0,
  unexpected: 0, // frames we did not expect (first 5 kept in `samples`)
  samples: [],
};

// The fan-out bookkeeping, replaced per step; `onMsg` is the hot path.
let fan = null;

class Client {
  constructor(index, node = 0) {
    this.index = index;
    this.node = node; // the index of its URL
    this.ws = null;
    this.nextAck = 0;
    this.acks = new Map(); // ack id -> callback(buffer, offsetOfArgs)
    this.closing = false;
    this.open = false;
  }

  connect(url) {
    return new Promise((resolveConnect, rejectConnect) => {
      const ws = new WebSocket(url, { perMessageDeflate: false, skipUTF8Validation: true });
      this.ws = ws;
      let settled = false;
      const fail = (error) => {
        if (!settled) {
          settled = true;
          stats.connectErrors++;
          rejectConnect(error);
        }
      };
      ws.on("error", (error) => fail(error));
      ws.on("close", () => {
        if (this.open && !this.closing) stats.disconnects++;
        this.open = false;
        fail(new Error("closed before connecting"));
      });
      ws.on("message", (data) => {
        const c0 = data[0];
        if (c0 === CH_4) {
          const c1 = data[1];
          if (c1 === CH_2) {
            if (fan !== null && data.compare(MSG_PREFIX, 0, 8, 0, 8) === 0) {
              fan.onMsg(data, this.node);
              return;
            }
            this.unexpected(data);
          } else if (c1 === CH_3) {
            let i = 2;
            let id = 0;
            while (data[i] !== CH_LBRACKET) id = id * 10 + (data[i++] - CH_0);
            const callback = this.acks.get(id);
            if (callback === undefined) return this.unexpected(data);
            this.acks.delete(id);
            callback(data, i);
          } else if (c1 === CH_0) {
            this.open = true;
            settled = true;
            resolveConnect(this);
          } else {
            this.unexpected(data);
          }
        } else if (c0 === CH_2) {
          ws.send("3"); // Engine.IO ping -> pong
        } else if (c0 === CH_0) {
          ws.send("40"); // Engine.IO open -> Socket.IO CONNECT to "/"
        } else {
          this.unexpected(data);
        }
      });
    });
  }

  unexpected(data) {
    stats.unexpected++;
    if (stats.samples.length < 5) stats.samples.push(data.toString("utf8", 0, 200));
  }

  emit(text) {
    this.ws.send(text);
  }

  emitWithAck(event, json, callback) {
    const id = this.nextAck++;
    this.acks.set(id, callback);
    this.ws.send(`42${id}["${event}",${json}]`);
  }

  call(event, json) {
    return new Promise((resolveCall) =>
      this.emitWithAck(event, json, (data, offset) =>
        resolveCall(JSON.parse(data.toString("utf8", offset))),
      ),
    );
  }

  close() {
    this.closing = true;
    this.ws.close();
  }
}

const nodeOf = (index) => Math.floor(index / opts.rooms) % URLS.length;

async function connectMany(count, startIndex = 0) {
  const clients = new Array(count);
  let next = 0;
  const t0 = now();
  const worker = async () => {
    while (next < count) {
      const i = next++;
      const client = new Client(startIndex + i, nodeOf(startIndex + i));
      await client.connect(URLS[client.node]);
      clients[i] = client;
    }
  };
  await Promise.all(Array.from({ length: Math.min(opts.concurrency, count) }, worker));
  return { clients, seconds: (now() - t0) / 1000 };
}

function closeAll(clients) {
  for (const client of clients) client.close();
}

// --- scenario: ack round trips ---------------------------------------------------------------

async function runAck() {
  const { clients, seconds: connectSeconds } = await connectMany(opts.conns);
  // Check the echo once per client: the same arguments must come back.
  for (const client of clients) {
    const payload = { n: client.index, text: "hello" };
    const reply = await client.call("echo", JSON.stringify(payload));
    if (JSON.stringify(reply) !== JSON.stringify([payload])) {
      throw new Error(`echo returned ${JSON.stringify(reply)}`);
    }
  }
  const histogram = new Histogram();
  let measuring = false;
  let running = true;
  let acks = 0;
  for (const client of clients) {
    const frame = `{"n":${client.index},"text":"hello"}`;
    let sentAt = 0;
    const onAck = () => {
      if (measuring) {
        acks++;
        histogram.add(now() - sentAt);
      }
      if (running) {
        sentAt = now();
        client.emitWithAck("echo", frame, onAck);
      }
    };
    sentAt = now();
    client.emitWithAck("echo", frame, onAck);
  }
  await sleep(opts.warmup * 1000);
  const disconnects0 = stats.disconnects;
  log("#window ack");
  const meter = new Meter();
  measuring = true;
  await sleep(opts.duration * 1000);
  measuring = false;
  const m = meter.stop();
  running = false;
  await sleep(200);
  closeAll(clients);
  return {
    scenario: "ack",
    conns: opts.conns,
    connect_s: round(connectSeconds),
    warmup_s: opts.warmup,
    duration_s: round(m.wall_s),
    acks,
    acks_per_s: round(acks / m.wall_s, 1),
    server_cpu: round(m.server_cpu),
    us_per_ack: acks ? round((m.server_cpu_s * 1e6) / acks, 2) : null,
    gen_cpu: round(m.gen_cpu),
    cores: m.cores,
    latency: histogram.summary(),
    disconnects: stats.disconnects - disconnects0,
  };
}

// --- scenario: room fan-out ------------------------------------------------------------------

function parseT(data, at) {
  // `..."t":123.456}]` -> 123.456, without decoding the frame (`at`: index of `"t":`).
  let i = at + 4;
  let value = 0;
  let c = data[i];
  while (c >= CH_0 && c <= 0x39) {
    value = value * 10 + (c - CH_0);
    c = data[++i];
  }
  if (c === 0x2e) {
    let scale = 0.1;
    c = data[++i];
    while (c >= CH_0 && c <= 0x39) {
      value += (c - CH_0) * scale;
      scale /= 10;
      c = data[++i];
    }
  }
  return value;
}

class FanoutStep {
  constructor(rate) {
    this.rate = rate;
    this.windowStart = Infinity; // sends stamped at or after windowStart are measured
    this.inWindow = false;
    this.received = 0; // every msg while the window is open (for throughput and CPU)
    this.measured = 0; // deliveries of measured sends, whenever they arrive
    this.lastArrival = now();
    this.histogram = new Histogram();
    this.local = new Histogram(); // --urls: sender and receiver on the same node
    this.remote = new Histogram(); // --urls: through Redis
    this.unknownOrigin = 0;
  }
  onMsg(data, node) {
    const arrived = now();
    this.lastArrival = arrived;
    if (this.inWindow) this.received++;
    const at = data.lastIndexOf(T_KEY);
    const t = parseT(data, at);
    if (t >= this.windowStart) {
      this.measured++;
      const ms = arrived - t;
      this.histogram.add(ms);
      if (!CLUSTER) return;
      // `..."text":"... n<k>","t":` : the sender's node is 3 bytes before `"t":`.
      const origin = data[at - 3] - CH_0;
      if (origin === node) this.local.add(ms);
      else if (origin >= 0 && origin < URLS.length) this.remote.add(ms);
      else this.unknownOrigin++;
    }
  }
}

async function runFanoutStep(rooms, rate, attempt) {
  const step = new FanoutStep(rate);
  fan = step;
  const warmupMs = opts.warmup * 1000;
  const durationMs = opts.duration * 1000;
  const pointers = new Array(rooms.length).fill(0);
  // prefixes[room][node]: across nodes, the sender's node ends the text.
  const prefixes = rooms.map((_, r) =>
    URLS.map((_, n) => {
      const text = CLUSTER ? `${opts.text} n${n}` : opts.text;
      return `42["say",{"room":"room-${r}","text":${JSON.stringify(text)},"t":`;
    }),
  );
  const quiet = CLUSTER && opts["quiet-wait"] > 0 ? await waitQuiet() : null;
  const disconnects0 = stats.disconnects;
  const redisBefore = await redisInfo();
  let sends = 0;
  let measuredSends = 0;
  let expected = 0;
  let meter = null;
  let m = null;
  let maxLagMs = 0;
  const start = now();
  step.windowStart = start + warmupMs;
  const endOfSending = step.windowStart + durationMs;
  await new Promise((done) => {
    let expectedTick = start;
    const tick = () => {
      let t = now();
      maxLagMs = Math.max(maxLagMs, t - expectedTick);
      if (meter === null && t >= step.windowStart) {
        // Measured sends are those stamped at or after windowStart. The previous tick was
        // at least 1 ms ago, and stamps are rounded to 1 µs.
        step.windowStart = t - 0.001;
        step.inWindow = true;
        log(`#window fanout ${rate}`);
        meter = new Meter();
      }
      const due = Math.floor(((Math.min(t, endOfSending) - start) / 1000) * rate);
      while (sends < due) {
        const r = sends % rooms.length;
        const room = rooms[r];
        const client = room[pointers[r]++ % room.length];
        t = now();
        client.emit(`${prefixes[r][client.node]}${t.toFixed(3)}}]`);
        sends++;
        if (meter !== null) {
          measuredSends++;
          expected += room.length - 1;
        }
      }
      if (t >= endOfSending) {
        m = meter.stop();
        step.inWindow = false;
        done();
        return;
      }
      expectedTick = now() + 1;
      setTimeout(tick, 1);
    };
    tick();
  });
  // Drain: wait for the deliveries of the measured sends (at most `drain` s), then until
  // the server(s) have been quiet for 300 ms, so the next step starts from an empty pipe.
  const drainStart = now();
  while (step.measured < expected && now() - drainStart < opts.drain * 1000) await sleep(5);
  const drainSeconds = (now() - drainStart) / 1000;
  const quietStart = now();
  while (now() - step.lastArrival < 300 && now() - quietStart < 15_000) await sleep(20);
  fan = null;
  const redis = CLUSTER ? redisDelta(redisBefore, await redisInfo(), sends) : null;
  const offered = rate * m.wall_s;
  const latency = step.histogram.summary();
  const result = {
    rate,
    attempt,
    offered: Math.round(offered),
    sent: measuredSends,
    sent_ratio: round(measuredSends / offered, 4),
    expected,
    delivered: step.measured,
    delivered_ratio: expected ? round(step.measured / expected, 5) : null,
    deliveries_per_s: round(step.received / m.wall_s, 1),
    ...latency,
    ...(CLUSTER && {
      local: { count: step.local.count, ...step.local.summary() },
      remote: { count: step.remote.count, ...step.remote.summary() },
      unknown_origin: step.unknownOrigin,
    }),
    server_cpu: round(m.server_cpu),
    ...(CLUSTER && { node_cpu: m.node_cpu }),
    us_per_delivery: step.received ? round((m.server_cpu_s * 1e6) / step.received, 2) : null,
    ...(CLUSTER && {
      redis_cpu: round(m.redis_cpu),
      redis_us_per_delivery: step.received ? round((m.redis_cpu_s * 1e6) / step.received, 3) : null,
    }),
    gen_cpu: round(m.gen_cpu),
    gen_max_lag_ms: round(maxLagMs, 1),
    ...(CLUSTER ? { machine: m.machine, redis } : { cores: m.cores }),
    drain_s: round(drainSeconds),
    disconnects: stats.disconnects - disconnects0,
    ...(CLUSTER && { quiet_before: quiet }),
  };
  const reasons = [];
  if (latency.p95_ms === null || latency.p95_ms >= opts["p95-ms"]) reasons.push(`p95 ${latency.p95_ms} ms`);
  if (result.delivered_ratio === null || result.delivered_ratio < opts["min-delivered"]) reasons.push(`delivered ${result.delivered_ratio}`);
  if (result.sent_ratio < opts["min-sent"]) reasons.push(`sent ${result.sent_ratio} of offered`);
  if (result.disconnects) reasons.push(`${result.disconnects} disconnects`);
  result.pass = reasons.length === 0;
  result.reasons = reasons;
  const verdict = result.pass ? "pass" : "FAIL " + reasons.join(", ");
  if (CLUSTER) {
    result.noisy = (m.machine.other_cores ?? 0) >= opts["noisy-other"];
    log(
      `  ${rate} say/s${attempt > 1 ? ` (attempt ${attempt})` : ""}: ${verdict}` +
        ` | ${result.deliveries_per_s} deliveries/s p95 ${latency.p95_ms} (local ${result.local.p95_ms}, cross-node ${result.remote.p95_ms}) p99 ${latency.p99_ms} ms` +
        ` | nodes ${m.node_cpu.map((c) => Math.round(c * 100)).join("+")} % ${result.us_per_delivery} µs/delivery` +
        ` | redis ${Math.round(m.redis_cpu * 100)} % ${redis ? redis.commands_per_say : "-"} cmd/say | gen ${Math.round(m.gen_cpu * 100)} %` +
        ` | other ${Math.round((m.machine.other_cores ?? 0) * 100)} % of a core` +
        (quiet && quiet.waited_s > 1 ? ` (waited ${quiet.waited_s} s for quiet before)` : ""),
    );
  } else {
    log(
      `  ${rate} say/s${attempt > 1 ? " (retry)" : ""}: ${verdict}` +
        ` | ${result.deliveries_per_s} deliveries/s p95 ${latency.p95_ms} p99 ${latency.p99_ms} ms` +
        ` | server ${Math.round(m.server_cpu * 100)} % ${result.us_per_delivery} µs/delivery | gen ${Math.round(m.gen_cpu * 100)} %` +
        ` | other ${Math.round((m.cores.core0.other ?? 0) * 100)}/${Math.round((m.cores.core1.other ?? 0) * 100)} %`,
    );
  }
  return result;
}

async function runFanout() {
  const { clients, seconds: connectSeconds } = await connectMany(opts.conns);
  const rooms = Array.from({ length: opts.rooms }, () => []);
  await Promise.all(
    clients.map(async (client) => {
      const r = client.index % opts.rooms;
      const reply = await client.call("join", JSON.stringify({ room: `room-${r}` }));
      if (JSON.stringify(reply) !== "[true]") throw new Error(`join returned ${JSON.stringify(reply)}`);
    }),
  );
  for (const client of clients) rooms[client.index % opts.rooms].push(client);
  const perNode = URLS.map((_, n) => clients.filter((c) => c.node === n).length);
  const roomsPerNode = rooms.map((room) => URLS.map((_, n) => room.filter((c) => c.node === n).length));
  if (CLUSTER) {
    log(`  ${clients.length} connected in ${connectSeconds.toFixed(1)} s: ${perNode.join(" + ")} on the nodes; room-0 has ${roomsPerNode[0].join(" + ")}`);
  }
  await sleep(300);
  const rates = String(opts.rates).split(",").map(Number);
  const steps = [];
  let best = null;
  let limit = "ladder top";
  for (let k = 0; k < rates.length; k++) {
    const rate = rates[k];
    let attempt = 1;
    let result = await runFanoutStep(rooms, rate, attempt);
    steps.push(result);
    // Plain retries, then (--noisy-retries) more while the failures happen under other
    // workloads.
    let retries = 0;
    let noisyRetries = 0;
    while (!result.pass) {
      if (retries < opts.retries) retries++;
      else if (result.noisy && noisyRetries < opts["noisy-retries"]) noisyRetries++;
      else break;
      result = await runFanoutStep(rooms, rate, ++attempt);
      steps.push(result);
    }
    if (opts["no-stop"]) continue;
    // Redis (across nodes) shares the generator's core.
    const genCore = result.gen_cpu + (result.redis_cpu ?? 0);
    if (!result.pass) {
      limit = genCore >= 0.95 ? "generator" : "server";
      break;
    }
    best = result;
    const next = rates[k + 1];
    if (next !== undefined && genCore * (next / rate) > opts["gen-cap"]) {
      limit = "generator";
      log(
        CLUSTER
          ? `  stop: the generator and Redis (${Math.round(genCore * 100)} % of a core at ${rate}) would saturate at ${next} say/s`
          : `  stop: the generator (${Math.round(genCore * 100)} % at ${rate}) would saturate at ${next} say/s`,
      );
      break;
    }
  }
  closeAll(clients);
  return {
    scenario: "fanout",
    ...(CLUSTER && { nodes: URLS.length }),
    conns: opts.conns,
    rooms: opts.rooms,
    ...(CLUSTER && { per_node: perNode, room_members_per_node: roomsPerNode }),
    connect_s: round(connectSeconds),
    warmup_s: opts.warmup,
    duration_s: opts.duration,
    steps,
    best,
    limit,
  };
}

// --- scenario: memory per idle connection ----------------------------------------------------

async function runMemory() {
  const warm = await connectMany(opts.warm);
  await sleep(2000);
  const rssBase = serverRssKiB();
  const rest = await connectMany(opts.conns - opts.warm, opts.warm);
  const clients = warm.clients.concat(rest.clients);
  log(`  ${clients.length} connected in ${rest.seconds.toFixed(1)} s; holding ${opts.hold} s`);
  const samples = [];
  const holdStart = now();
  while (now() - holdStart < opts.hold * 1000) {
    await sleep(1000);
    samples.push(serverRssKiB());
  }
  const rssLoaded = serverRssKiB();
  const alive = clients.filter((client) => client.open).length;
  // Every connection must still answer: one echo each.
  let echoed = 0;
  await Promise.race([
    Promise.all(
      clients
        .filter((client) => client.open)
        .map((client) => client.call("echo", "1").then(() => echoed++)),
    ),
    sleep(20_000),
  ]);
  const rssAfterEcho = serverRssKiB();
  closeAll(clients);
  await sleep(3000);
  const rssAfterClose = serverRssKiB();
  const added = clients.length - opts.warm;
  return {
    scenario: "memory",
    conns: clients.length,
    warm: opts.warm,
    connect_s: round(rest.seconds),
    connects_per_s: round(added / rest.seconds, 1),
    hold_s: opts.hold,
    rss_base_kib: rssBase,
    rss_loaded_kib: rssLoaded,
    rss_hold_samples_kib: samples,
    rss_after_echo_kib: rssAfterEcho,
    rss_after_close_kib: rssAfterClose,
    per_conn_kib: round((rssLoaded - rssBase) / added, 2),
    alive_after_hold: alive,
    echoed_after_hold: echoed,
    disconnects: stats.disconnects,
  };
}

// --- main ------------------------------------------------------------------------------------

const scenarios = { ack: runAck, fanout: runFanout, memory: runMemory };

async function main() {
  const run = scenarios[opts.scenario];
  if (run === undefined) throw new Error(`scenario must be one of ${Object.keys(scenarios)}`);
  if (CLUSTER && run !== runFanout) throw new Error("with --urls, the only scenario is fanout");
  if (URLS.length < 1) throw new Error("--urls: none");
  const result = await run();
  result.ws_version = WS_VERSION;
  result.connect_errors = stats.connectErrors;
  result.unexpected_frames = stats.unexpected;
  result.unexpected_samples = stats.samples;
  process.stdout.write(JSON.stringify(result) + "\n");
  // Let the close frames go out, then leave even if a socket lingers.
  await sleep(300);
  process.exit(0);
}

main().catch((error) => {
  log(`loadgen: ${error.stack || error}`);
  process.exit(1);
});
