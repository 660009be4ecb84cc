// The ReplyHQ admin dashboard: conversations over REST, everything live over the /admin
// Socket.IO namespace (protocol/PROTOCOL.md sections 6-11). Every text that comes from
// the server or a user is put in the page with textContent, never parsed as HTML.

import { AckTimeoutError, DisconnectedError, SocketIOClient } from "./sio.js";

const STORAGE_KEY = "replyhq.dashboard.credentials";
const SOCKET_URL = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/socket.io/?EIO=4&transport=websocket`;
const HISTORY_PAGE = 200;
// A dashboard shows a conversation, not an archive: past this many messages the oldest
// are not fetched (the REST API pages forward only).
const HISTORY_MAX_PAGES = 25;
const MAX_BODY = 10000;
// The server ends typing by itself 5 s after the last typing:start, so a start is
// repeated sooner than that while the agent keeps typing, and no faster (rate limits).
const TYPING_REPEAT_MS = 3000;
const TYPING_IDLE_MS = 2500;
// A user:typing whose is_typing:false got lost must not show for ever.
const REMOTE_TYPING_TTL_MS = 8000;
const TOAST_MS = 8000;
const SESSIONS_RELOAD_MS = 1000;

const ERROR_TEXT = {
  MISSING_PARAMS: "Both the app id and the admin token are required.",
  INVALID_CREDENTIALS: "The app id or the admin token is wrong, or the token was revoked.",
  AUTH_EXPIRED: "This admin token was revoked. Sign in with another one.",
  RATE_LIMITED: "Too many requests at once. Wait a moment and retry.",
  INVALID_PAYLOAD: "The server refused the request as malformed.",
  INVALID_CURSOR: "The message history changed; reloading it.",
  UNKNOWN_EVENT: "The server does not know this request.",
  CONVERSATION_NOT_FOUND: "This conversation does not exist (any more).",
  FORBIDDEN: "That belongs to another app.",
  STORE_UNAVAILABLE: "The server's database is unreachable and nothing was saved. Retry shortly.",
  SHUTTING_DOWN: "The server is restarting. Retry in a moment.",
  TOO_MANY_CONNECTIONS: "Too many connections.",
  "Invalid namespace": "This server has no dashboard namespace (/admin) yet.",
  connect_timeout: "The server did not answer in time.",
  ping_timeout: "The connection went silent.",
  transport_close: "The connection was closed.",
  server_close: "The server closed the connection.",
  server_disconnect: "The server ended the session.",
  server_shutdown: "The server is restarting.",
};

function describe(code, fallback) {
  return ERROR_TEXT[code] || fallback || code || "Something went wrong.";
}

// ---- DOM helpers --------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

/** An element with classes, attributes and children; strings become text nodes. */
function el(tag, { cls, attrs, text } = {}, ...children) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (attrs) for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function show(node, visible) {
  node.hidden = !visible;
}

// ---- time ---------------------------------------------------------------------------

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const secondsFormat = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
});
const dayFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });

function parseTime(iso) {
  const ms = Date.parse(iso);
  return Number.isNaN(ms) ? null : ms;
}

function isToday(ms) {
  return new Date(ms).toDateString() === new Date().toDateString();
}

function clock(iso, { seconds = false } = {}) {
  const ms = parseTime(iso);
  if (ms === null) return "";
  const time = (seconds ? secondsFormat : timeFormat).format(ms);
  return isToday(ms) ? time : `${dayFormat.format(ms)}, ${time}`;
}

function ago(iso) {
  const ms = parseTime(iso);
  if (ms === null) return "";
  const seconds = Math.max(0, Math.round((serverNow() - ms) / 1000));
  if (seconds < 45) return "just now";
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.round(minutes / 60);
  if (hours < 24) return `${hours} h ago`;
  return `${Math.round(hours / 24)} d ago`;
}

function serverNow() {
  return Date.now() + state.clockOffsetMs;
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function newLocalId() {
  if (globalThis.crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
  // randomUUID exists only in secure contexts; a dashboard on plain http to a LAN host
  // is not one, but getRandomValues is available everywhere.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// ---- state --------------------------------------------------------------------------

const state = {
  creds: null,
  client: null,
  clockOffsetMs: 0,
  // id -> conversation payload, plus `preview` and `unread` kept by the page
  conversations: new Map(),
  conversationsMore: false,
  selected: null,
  // of the selected conversation: id -> message, and local_id -> a message being sent
  messages: new Map(),
  pending: new Map(),
  historyLoaded: false,
  // connection_id -> {device_id, connected_at, node_id}
  sessions: new Map(),
  sessionsKnown: false,
  // while sessions:list is in flight, the session events that may or may not be in it
  sessionReplay: null,
  // device_id -> {online, lastSeen}
  presence: new Map(),
  // conversation_id -> Map(device_id -> timer)
  remoteTyping: new Map(),
  typing: { conversationId: null, lastStartMs: 0, idleTimer: null },
  retryTicker: null,
  conversationsReload: null,
  sessionsReload: null,
  // the next "connected" is the first of this sign-in: nothing to catch up on
  firstConnect: true,
};

// ---- REST ---------------------------------------------------------------------------

class ApiError extends Error {
  constructor(code, message, status) {
    super(message || code);
    this.code = code;
    this.status = status;
  }
}

async function api(path, creds = state.creds) {
  let response;
  try {
    response = await fetch(path, {
      headers: {
        Accept: "application/json",
        Authorization: `Bearer ${creds.token}`,
        "X-App-Id": creds.appId,
      },
      cache: "no-store",
    });
  } catch (error) {
    // fetch refuses header values that are not Latin-1 before sending anything.
    const code =
      error instanceof TypeError && /header/i.test(error.message) ? "INVALID_CREDENTIALS" : "NETWORK";
    throw new ApiError(code, code === "NETWORK" ? "The server cannot be reached." : undefined, 0);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const error = (body && body.error) || {};
    throw new ApiError(
      error.code || `HTTP_${response.status}`,
      error.message || `HTTP ${response.status}`,
      response.status,
    );
  }
  return body;
}

// ---- login --------------------------------------------------------------------------

function loadCredentials() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || "null");
    if (saved && typeof saved.appId === "string" && typeof saved.token === "string") return saved;
  } catch {
    // A damaged entry is as good as none.
  }
  return null;
}

function showLogin(message) {
  show($("app-view"), false);
  show($("login-view"), true);
  const error = $("login-error");
  error.textContent = message || "";
  show(error, Boolean(message));
  const submit = $("login-submit");
  submit.disabled = false;
  submit.textContent = "Sign in";
  ($("login-app-id").value ? $("login-token") : $("login-app-id")).focus();
}

async function signIn(creds) {
  const submit = $("login-submit");
  submit.disabled = true;
  submit.textContent = "Signing in…";
  // The REST call checks the credentials before the page switches over, and loads the
  // conversations the page opens with.
  let listing;
  try {
    listing = await api("/v1/conversations", creds);
  } catch (error) {
    sessionStorage.removeItem(STORAGE_KEY);
    showLogin(describe(error.code, error.message));
    return;
  }
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify(creds));
  state.creds = creds;
  startDashboard(listing);
}

function signOut(message) {
  if (state.client) state.client.close();
  state.client = null;
  stopTyping();
  clearInterval(state.retryTicker);
  clearTimeout(state.sessionsReload);
  clearTimeout(state.conversationsReload);
  for (const timers of state.remoteTyping.values()) for (const t of timers.values()) clearTimeout(t);
  sessionStorage.removeItem(STORAGE_KEY);
  const appId = state.creds ? state.creds.appId : "";
  Object.assign(state, {
    creds: null,
    conversations: new Map(),
    selected: null,
    messages: new Map(),
    pending: new Map(),
    historyLoaded: false,
    sessions: new Map(),
    sessionsKnown: false,
    sessionReplay: null,
    presence: new Map(),
    remoteTyping: new Map(),
    sessionsReload: null,
    conversationsReload: null,
    firstConnect: true,
  });
  $("login-app-id").value = appId;
  $("login-token").value = "";
  showLogin(message);
}

// ---- the dashboard ------------------------------------------------------------------

function startDashboard(listing) {
  show($("login-view"), false);
  show($("app-view"), true);
  $("app-label").textContent = state.creds.appId;
  applyConversations(listing);
  renderAll();
  const client = new SocketIOClient({
    url: SOCKET_URL,
    namespace: "/admin",
    auth: () => ({ app_id: state.creds.appId, admin_token: state.creds.token }),
  });
  state.client = client;
  client.onStatus(onStatus);
  client.on("connected", onConnected);
  client.on("session:connect", (p) => sessionEvent("connect", p));
  client.on("session:disconnect", (p) => sessionEvent("disconnect", p));
  client.on("presence:change", onPresence);
  client.on("message:new", onMessage);
  client.on("message:status", onStatusChange);
  client.on("user:typing", onUserTyping);
  client.on("server:shutdown", onShutdown);
  client.on("error", (p) => toast(describe(p && p.code, p && p.message), "error"));
  client.open();
}

function onStatus(status) {
  const box = $("conn-status");
  const text = $("conn-text");
  clearInterval(state.retryTicker);
  box.dataset.state = status.state;
  switch (status.state) {
    case "connecting":
      text.textContent = status.attempt > 1 ? `Connecting (attempt ${status.attempt})…` : "Connecting…";
      break;
    case "connected":
      text.textContent = "Live";
      show($("banner"), false);
      afterConnect();
      break;
    case "disconnected":
      text.textContent = "Disconnected";
      document.body.classList.add("stale");
      stopTyping();
      // No is_typing:false will come for what was typing when the connection went.
      for (const id of state.remoteTyping.keys()) clearRemoteTyping(id);
      renderConversations();
      renderComposer();
      break;
    case "waiting": {
      const until = Date.now() + status.delayMs;
      const reason = describe(status.reason);
      const tick = () => {
        const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
        text.textContent = left > 0 ? `Reconnecting in ${left} s` : "Reconnecting…";
      };
      tick();
      state.retryTicker = setInterval(tick, 1000);
      banner(`${reason} Trying again automatically.`, "warning");
      document.body.classList.add("stale");
      renderComposer();
      break;
    }
    case "refused":
      signOut(describe(status.code, status.message));
      break;
    case "closed":
      text.textContent = "Offline";
      break;
    default:
      break;
  }
}

function onConnected(payload) {
  const serverMs = payload && parseTime(payload.server_time);
  if (serverMs !== null && serverMs !== undefined) state.clockOffsetMs = serverMs - Date.now();
}

async function afterConnect() {
  document.body.classList.remove("stale");
  renderComposer();
  const again = !state.firstConnect;
  state.firstConnect = false;
  // Sends that never reached the server, or whose answer was lost, go again with their
  // local_id: the server stores a repeated local_id once (PROTOCOL.md section 12).
  const queued = Array.from(state.pending.values()).filter((p) => p.state === "queued");
  await Promise.all([
    loadSessions(),
    state.selected ? joinSelected(again) : null,
    again ? reloadConversations() : null,
    ...queued.map((p) => deliver(p.local_id)),
  ]);
}

function banner(message, tone) {
  const node = $("banner");
  node.textContent = message;
  node.dataset.tone = tone;
  show(node, true);
}

function toast(message, tone = "info") {
  const close = el("button", {
    cls: "toast-close",
    attrs: { type: "button", "aria-label": "Dismiss" },
    text: "×",
  });
  const node = el(
    "div",
    { cls: `toast toast-${tone}`, attrs: { role: tone === "error" ? "alert" : "status" } },
    el("span", { text: message }),
    close,
  );
  const remove = () => node.remove();
  close.addEventListener("click", remove);
  setTimeout(remove, TOAST_MS);
  $("toasts").append(node);
}

function onShutdown(payload) {
  const seconds = Math.round(((payload && payload.reconnect_delay_ms) || 0) / 1000);
  banner(`The server is restarting. Reconnecting in about ${plural(seconds, "second")}.`, "warning");
}

// ---- sessions and presence ----------------------------------------------------------

async function loadSessions() {
  const client = state.client;
  state.sessionReplay = [];
  let ack;
  try {
    ack = await client.request("sessions:list", { app_id: state.creds.appId });
  } catch (error) {
    state.sessionReplay = null;
    if (!(error instanceof DisconnectedError))
      toast(`Live sessions could not be loaded: ${error.message}`, "error");
    return;
  }
  if (client !== state.client) return;
  if (!ack || !ack.success) {
    state.sessionReplay = null;
    toast(`Live sessions could not be loaded: ${describe(ack && ack.error)}`, "error");
    return;
  }
  state.sessions = new Map();
  for (const s of ack.sessions) {
    state.sessions.set(s.connection_id, {
      device_id: s.device_id,
      connected_at: s.connected_at,
      node_id: s.node_id,
    });
  }
  // The list is a snapshot taken at some moment while the request was in flight; the
  // events seen meanwhile are replayed on top (adding or removing twice is harmless).
  const replay = state.sessionReplay;
  state.sessionReplay = null;
  for (const [kind, payload] of replay) applySession(kind, payload);
  // Presence starts from the snapshot; presence:change keeps it from then on.
  const online = new Set(Array.from(state.sessions.values(), (s) => s.device_id));
  for (const [deviceId, record] of state.presence) record.online = online.has(deviceId);
  for (const deviceId of online) {
    if (!state.presence.has(deviceId)) state.presence.set(deviceId, { online: true, lastSeen: null });
  }
  state.sessionsKnown = true;
  renderPeople();
  renderConversations();
}

function sessionEvent(kind, payload) {
  if (!payload || payload.app_id !== state.creds.appId) return;
  if (state.sessionReplay) state.sessionReplay.push([kind, payload]);
  applySession(kind, payload);
  renderPeople();
}

function applySession(kind, payload) {
  if (kind === "connect") {
    const known = state.sessions.get(payload.connection_id);
    const nodeId = payload.node_id || (known && known.node_id) || "";
    state.sessions.set(payload.connection_id, {
      device_id: payload.device_id,
      connected_at: payload.connected_at,
      node_id: nodeId,
    });
    // session:connect does not say which node holds the connection; sessions:list does.
    if (!nodeId) scheduleSessionsReload();
    if (!state.presence.has(payload.device_id)) {
      state.presence.set(payload.device_id, { online: true, lastSeen: null });
    }
  } else {
    state.sessions.delete(payload.connection_id);
    const record = state.presence.get(payload.device_id);
    if (record) record.lastSeen = new Date(serverNow()).toISOString();
    // Its last connection here ended: the cluster-wide list says whether it is still
    // online (a crossing made while Redis was away is never reported as one).
    if (connectionsOf(payload.device_id) === 0) scheduleSessionsReload();
  }
}

/** One sessions:list for a burst of connections, to learn their nodes. */
function scheduleSessionsReload() {
  if (state.sessionsReload || state.sessionReplay) return;
  state.sessionsReload = setTimeout(async () => {
    state.sessionsReload = null;
    // One list at a time: two would share (and lose) the events replayed on top.
    if (state.client && state.client.connected && !state.sessionReplay) await loadSessions();
  }, SESSIONS_RELOAD_MS);
}

function onPresence(payload) {
  if (!payload || payload.app_id !== state.creds.appId) return;
  const record = state.presence.get(payload.device_id) || { online: false, lastSeen: null };
  record.online = Boolean(payload.is_online);
  if (!record.online) record.lastSeen = new Date(serverNow()).toISOString();
  state.presence.set(payload.device_id, record);
  renderPeople();
  renderConversations();
  renderThreadHead();
}

function connectionsOf(deviceId) {
  let n = 0;
  for (const s of state.sessions.values()) if (s.device_id === deviceId) n += 1;
  return n;
}

function isOnline(deviceId) {
  const record = state.presence.get(deviceId);
  return record ? record.online : false;
}

// ---- conversations ------------------------------------------------------------------

function applyConversations(listing) {
  const previous = state.conversations;
  state.conversations = new Map();
  for (const c of listing.conversations) {
    const known = previous.get(c.id);
    state.conversations.set(c.id, {
      ...c,
      preview: known ? known.preview : null,
      unread: known ? known.unread : 0,
    });
  }
  // A conversation that went past the 200 listed but is open stays listed.
  if (state.selected && !state.conversations.has(state.selected) && previous.has(state.selected)) {
    state.conversations.set(state.selected, previous.get(state.selected));
  }
  state.conversationsMore = Boolean(listing.has_more);
}

async function reloadConversations() {
  const creds = state.creds;
  if (!creds) return;
  try {
    const listing = await api("/v1/conversations", creds);
    if (creds !== state.creds) return; // signed out meanwhile
    applyConversations(listing);
  } catch (error) {
    if (creds !== state.creds) return;
    if (error.status === 401) {
      signOut(describe(error.code));
      return;
    }
    toast(`The conversations could not be loaded: ${describe(error.code, error.message)}`, "error");
    return;
  }
  renderConversations();
  renderPeople();
}

/** One reload for a burst of messages in conversations the page has not listed yet. */
function scheduleConversationsReload() {
  if (state.conversationsReload) return;
  state.conversationsReload = setTimeout(async () => {
    await reloadConversations();
    state.conversationsReload = null;
  }, 150);
}

function sortedConversations() {
  return Array.from(state.conversations.values()).sort((a, b) =>
    a.updated_at === b.updated_at ? (a.id < b.id ? 1 : -1) : a.updated_at < b.updated_at ? 1 : -1,
  );
}

async function selectConversation(id) {
  if (state.selected === id) return;
  const previous = state.selected;
  stopTyping();
  state.selected = id;
  state.messages = new Map();
  state.pending = new Map();
  state.historyLoaded = false;
  const conversation = state.conversations.get(id);
  if (conversation) conversation.unread = 0;
  $("composer-input").value = "";
  renderAll();
  const client = state.client;
  if (previous && client && client.connected) {
    // Only the selected conversation is watched: its typing events, and nothing to leave later.
    client.request("conversation:leave", { conversation_id: previous }).catch(() => {});
  }
  await Promise.all([joinSelected(false), loadHistory(id, null)]);
  $("composer-input").focus();
}

async function joinSelected(catchUp) {
  const id = state.selected;
  const client = state.client;
  if (!id || !client || !client.connected) return;
  let ack;
  try {
    ack = await client.request("conversation:join", { conversation_id: id });
  } catch (error) {
    if (!(error instanceof DisconnectedError))
      toast(`Could not watch the conversation: ${error.message}`, "error");
    return;
  }
  if (id !== state.selected) return;
  if (!ack || !ack.success) {
    toast(describe(ack && ack.error), "error");
    return;
  }
  // After a reconnect, what was said while the page was away comes by cursor.
  if (catchUp && ack.last_message_id && !state.messages.has(ack.last_message_id)) {
    await loadHistory(id, lastMessageId());
  }
}

function lastMessageId() {
  let last = null;
  for (const id of state.messages.keys()) if (last === null || id > last) last = id;
  return last;
}

async function loadHistory(id, after) {
  let cursor = after;
  for (let page = 0; page < HISTORY_MAX_PAGES; page += 1) {
    const query = new URLSearchParams({ limit: String(HISTORY_PAGE) });
    if (cursor) query.set("after", cursor);
    let body;
    try {
      body = await api(`/v1/conversations/${encodeURIComponent(id)}/messages?${query}`);
    } catch (error) {
      if (id !== state.selected) return;
      if (error.code === "INVALID_CURSOR" && cursor) {
        state.messages = new Map();
        cursor = null;
        continue;
      }
      toast(`Messages could not be loaded: ${describe(error.code, error.message)}`, "error");
      break;
    }
    if (id !== state.selected) return;
    for (const message of body.messages) addMessage(message);
    if (!body.has_more || body.messages.length === 0) break;
    cursor = body.messages[body.messages.length - 1].id;
  }
  state.historyLoaded = true;
  renderThread();
}

function addMessage(message) {
  const known = state.messages.get(message.id);
  // A status only moves forward; a late message:new must not undo a receipt.
  if (known && rank(known.status) > rank(message.status)) message = { ...message, status: known.status };
  state.messages.set(message.id, message);
  const pending = state.pending.get(message.local_id);
  if (pending && message.sender === "agent") state.pending.delete(message.local_id);
}

function rank(status) {
  return { sent: 0, delivered: 1, read: 2 }[status] ?? 0;
}

function onMessage(message) {
  if (!message || !message.conversation_id) return;
  const conversation = state.conversations.get(message.conversation_id);
  if (!conversation) {
    scheduleConversationsReload();
  } else {
    conversation.last_message_id = message.id;
    if (message.created_at > conversation.updated_at) conversation.updated_at = message.created_at;
    conversation.preview = { sender: message.sender, body: message.body };
    if (message.conversation_id !== state.selected && message.sender === "user") conversation.unread += 1;
  }
  if (message.sender === "user") clearRemoteTyping(message.conversation_id);
  if (message.conversation_id === state.selected) {
    addMessage(message);
    renderThread();
  }
  renderConversations();
}

function onStatusChange(payload) {
  if (!payload || payload.conversation_id !== state.selected) return;
  const message = state.messages.get(payload.message_id);
  if (!message || rank(payload.status) <= rank(message.status)) return;
  state.messages.set(message.id, { ...message, status: payload.status });
  renderThread();
}

// ---- typing -------------------------------------------------------------------------

function onUserTyping(payload) {
  if (!payload) return;
  const id = payload.conversation_id;
  let typists = state.remoteTyping.get(id);
  if (!typists) {
    typists = new Map();
    state.remoteTyping.set(id, typists);
  }
  clearTimeout(typists.get(payload.device_id));
  if (payload.is_typing) {
    typists.set(
      payload.device_id,
      setTimeout(() => {
        typists.delete(payload.device_id);
        renderTyping();
        renderConversations();
      }, REMOTE_TYPING_TTL_MS),
    );
  } else {
    typists.delete(payload.device_id);
  }
  renderTyping();
  renderConversations();
}

function clearRemoteTyping(conversationId) {
  const typists = state.remoteTyping.get(conversationId);
  if (!typists) return;
  for (const timer of typists.values()) clearTimeout(timer);
  typists.clear();
  renderTyping();
}

function typistsOf(conversationId) {
  const typists = state.remoteTyping.get(conversationId);
  return typists ? Array.from(typists.keys()) : [];
}

function onComposerInput() {
  const input = $("composer-input");
  const client = state.client;
  if (!state.selected || !client || !client.connected) return;
  if (input.value.trim() === "") {
    stopTyping();
    return;
  }
  const typing = state.typing;
  const now = Date.now();
  if (typing.conversationId !== state.selected || now - typing.lastStartMs >= TYPING_REPEAT_MS) {
    if (typing.conversationId && typing.conversationId !== state.selected) stopTyping();
    client.emit("typing:start", { conversation_id: state.selected });
    typing.conversationId = state.selected;
    typing.lastStartMs = now;
  }
  clearTimeout(typing.idleTimer);
  typing.idleTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
}

function stopTyping() {
  const typing = state.typing;
  clearTimeout(typing.idleTimer);
  typing.idleTimer = null;
  if (typing.conversationId && state.client) {
    state.client.emit("typing:stop", { conversation_id: typing.conversationId });
  }
  typing.conversationId = null;
  typing.lastStartMs = 0;
}

// ---- sending ------------------------------------------------------------------------

async function onSend(event) {
  event.preventDefault();
  const input = $("composer-input");
  const body = input.value;
  if (!state.selected || body.trim() === "") return;
  if ([...body].length > MAX_BODY) {
    toast(`A message holds at most ${MAX_BODY.toLocaleString()} characters.`, "error");
    return;
  }
  const localId = newLocalId();
  state.pending.set(localId, {
    local_id: localId,
    conversation_id: state.selected,
    body,
    state: "sending",
    error: null,
  });
  input.value = "";
  stopTyping();
  renderThread();
  await deliver(localId);
}

async function deliver(localId) {
  const pending = state.pending.get(localId);
  if (!pending) return;
  pending.state = "sending";
  pending.error = null;
  renderThread();
  let ack;
  try {
    if (!state.client) throw new DisconnectedError("message:send");
    ack = await state.client.request("message:send", {
      conversation_id: pending.conversation_id,
      body: pending.body,
      local_id: pending.local_id,
    });
  } catch (error) {
    if (error instanceof AckTimeoutError || error instanceof DisconnectedError) {
      pending.state = "queued";
      pending.error = null;
    } else {
      pending.state = "failed";
      pending.error = error.message;
    }
    renderThread();
    return;
  }
  if (pending.conversation_id !== state.selected) return;
  if (ack && ack.success) {
    addMessage(ack.message);
    state.pending.delete(localId);
  } else {
    pending.state = "failed";
    pending.error = describe(ack && ack.error);
  }
  renderThread();
}

// ---- rendering ----------------------------------------------------------------------

function renderAll() {
  renderConversations();
  renderThread();
  renderPeople();
}

function renderConversations() {
  const list = $("conversations");
  const items = sortedConversations().map((c) => {
    const typing = typistsOf(c.id).length > 0;
    const online = isOnline(c.device_id);
    let preview;
    let previewClass = "conversation-preview";
    if (typing) {
      preview = "typing…";
      previewClass += " is-typing";
    } else if (c.preview) {
      preview = `${c.preview.sender === "agent" ? "You: " : ""}${c.preview.body}`;
    } else if (c.last_message_id) {
      // The list carries no message text; the id tells conversations of one device apart.
      preview = c.id;
      previewClass += " mono";
    } else {
      preview = "No messages yet";
    }
    const button = el(
      "button",
      { cls: "conversation", attrs: { type: "button" } },
      el("span", {
        cls: `avatar${online ? " online" : ""}`,
        text: initials(c.device_id),
        attrs: { "aria-hidden": "true" },
      }),
      el(
        "span",
        { cls: "conversation-main" },
        el(
          "span",
          { cls: "conversation-top" },
          el("span", { cls: "conversation-device", text: c.device_id }),
          el("span", { cls: "conversation-time", text: clock(c.updated_at) }),
        ),
        el("span", { cls: previewClass, text: preview }),
      ),
      c.unread > 0
        ? el("span", { cls: "badge", text: String(c.unread), attrs: { "aria-label": `${c.unread} unread` } })
        : null,
    );
    button.addEventListener("click", () => selectConversation(c.id));
    const item = el("li", { attrs: { "data-conversation-id": c.id } }, button);
    if (c.id === state.selected) {
      item.classList.add("selected");
      button.setAttribute("aria-current", "true");
    }
    return item;
  });
  list.replaceChildren(...items);
  $("conversation-count").textContent = items.length ? String(items.length) : "";
  show($("conversations-empty"), items.length === 0);
  show($("conversations-more"), state.conversationsMore);
}

function initials(text) {
  const letters = (text || "?")
    .replace(/[^\p{L}\p{N}]+/gu, " ")
    .trim()
    .split(" ")
    .filter(Boolean);
  const chosen = letters.length > 1 ? letters[0][0] + letters[1][0] : (letters[0] || "?").slice(0, 2);
  return chosen.toUpperCase();
}

function renderThreadHead() {
  const conversation = state.conversations.get(state.selected);
  const presence = $("thread-presence");
  if (!conversation) {
    $("thread-title").textContent = state.selected ? "Conversation" : "No conversation selected";
    $("thread-meta").textContent = state.selected || "";
    show(presence, false);
    return;
  }
  $("thread-title").textContent = conversation.device_id;
  $("thread-meta").textContent = conversation.id;
  const online = isOnline(conversation.device_id);
  presence.textContent = online ? "Online" : "Offline";
  presence.dataset.online = String(online);
  show(presence, true);
}

function renderThread() {
  renderThreadHead();
  const list = $("messages");
  const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  const ordered = Array.from(state.messages.values()).sort((a, b) =>
    a.id < b.id ? -1 : a.id > b.id ? 1 : 0,
  );
  const items = [];
  let lastDay = null;
  for (const message of ordered) {
    const ms = parseTime(message.created_at);
    const day = ms === null ? null : new Date(ms).toDateString();
    if (day && day !== lastDay) {
      items.push(el("li", { cls: "day", text: isToday(ms) ? "Today" : dayFormat.format(ms) }));
      lastDay = day;
    }
    items.push(messageItem(message));
  }
  for (const pending of state.pending.values()) {
    if (pending.conversation_id === state.selected) items.push(pendingItem(pending));
  }
  list.replaceChildren(...items);
  if (nearBottom || items.length < 3) list.scrollTop = list.scrollHeight;

  const empty = $("thread-empty");
  let emptyText = null;
  if (!state.selected) emptyText = "Pick a conversation on the left to read it and reply.";
  else if (!state.historyLoaded && items.length === 0) emptyText = "Loading messages…";
  else if (items.length === 0) emptyText = "No messages yet. Say hello!";
  $("thread-empty-text").textContent = emptyText || "";
  show(empty, emptyText !== null);
  show(list, emptyText === null);
  renderTyping();
  renderComposer();
}

const SENDER_LABEL = { user: "Customer", agent: "You (agent)", system: "System" };
const STATUS_LABEL = { sent: "Sent", delivered: "Delivered", read: "Read" };

function messageItem(message) {
  const sender = ["user", "agent", "system"].includes(message.sender) ? message.sender : "system";
  const meta = el(
    "span",
    { cls: "message-meta" },
    el("span", { text: SENDER_LABEL[sender] }),
    el("span", { cls: "sep", text: "·" }),
    el("time", { attrs: { datetime: message.created_at }, text: clock(message.created_at) }),
  );
  if (sender === "agent") {
    meta.append(
      el("span", { cls: "sep", text: "·" }),
      el("span", {
        cls: `status status-${message.status}`,
        text: STATUS_LABEL[message.status] || message.status,
      }),
    );
  }
  return el(
    "li",
    {
      cls: `message from-${sender}`,
      attrs: {
        "data-message-id": message.id,
        "data-sender": sender,
        "data-local-id": message.local_id || "",
      },
    },
    el("div", { cls: "bubble", text: message.body }),
    meta,
  );
}

function pendingItem(pending) {
  const meta = el("span", { cls: "message-meta" });
  const discard = el("button", { cls: "link-button", attrs: { type: "button" }, text: "Discard" });
  discard.addEventListener("click", () => {
    state.pending.delete(pending.local_id);
    renderThread();
  });
  if (pending.state === "sending") {
    meta.append(el("span", { text: "Sending…" }));
  } else if (pending.state === "queued") {
    meta.append(
      el("span", { text: "Waiting for the connection: it is sent once the dashboard is back." }),
      discard,
    );
  } else {
    const retry = el("button", { cls: "link-button", attrs: { type: "button" }, text: "Retry" });
    // The same local_id: if the first try did reach the server, it is not stored twice.
    retry.addEventListener("click", () => deliver(pending.local_id));
    meta.append(
      el("span", { cls: "message-error", text: `Not sent: ${pending.error || "refused"}` }),
      retry,
      discard,
    );
  }
  return el(
    "li",
    {
      cls: `message from-agent pending${pending.state === "failed" ? " failed" : ""}`,
      attrs: { "data-local-id": pending.local_id, "data-sender": "agent" },
    },
    el("div", { cls: "bubble", text: pending.body }),
    meta,
  );
}

function renderTyping() {
  const typists = state.selected ? typistsOf(state.selected) : [];
  const box = $("typing");
  if (typists.length === 0) {
    show(box, false);
    return;
  }
  $("typing-text").textContent =
    typists.length === 1 ? `${typists[0]} is typing…` : `${typists.join(", ")} are typing…`;
  show(box, true);
}

function renderComposer() {
  const input = $("composer-input");
  const send = $("composer-send");
  const connected = Boolean(state.client && state.client.connected);
  show($("composer"), Boolean(state.selected));
  show($("composer-hint"), Boolean(state.selected));
  input.disabled = !state.selected;
  send.disabled = !state.selected || !connected;
  if (!state.selected) input.placeholder = "Select a conversation to reply";
  else if (!connected) input.placeholder = "Reconnecting… you can type, and send once the dashboard is live";
  else input.placeholder = "Reply as the agent…";
}

function renderPeople() {
  renderDevices();
  renderSessions();
}

function renderDevices() {
  const ids = new Set(state.presence.keys());
  for (const c of state.conversations.values()) ids.add(c.device_id);
  for (const s of state.sessions.values()) ids.add(s.device_id);
  const devices = Array.from(ids, (id) => ({ id, online: isOnline(id), count: connectionsOf(id) }));
  devices.sort((a, b) => (a.online !== b.online ? (a.online ? -1 : 1) : a.id.localeCompare(b.id)));
  const items = devices.map((d) => {
    const record = state.presence.get(d.id);
    let detail;
    if (d.online) detail = d.count > 0 ? `Online · ${plural(d.count, "connection")}` : "Online";
    else if (record && record.lastSeen) detail = `Offline · seen ${clock(record.lastSeen)}`;
    else detail = "Offline";
    const item = el(
      "li",
      {
        cls: `device${d.online ? " online" : ""}`,
        attrs: {
          "data-device-id": d.id,
          "data-online": String(d.online),
          "data-connections": String(d.count),
        },
      },
      el("span", { cls: "presence-dot", attrs: { "aria-hidden": "true" } }),
      el(
        "span",
        { cls: "device-main" },
        el("span", { cls: "device-name", text: d.id }),
        el("span", { cls: "device-detail", text: detail }),
      ),
    );
    const latest = sortedConversations().find((c) => c.device_id === d.id);
    if (latest) {
      item.classList.add("clickable");
      item.title = "Open this device's latest conversation";
      item.addEventListener("click", () => selectConversation(latest.id));
    }
    return item;
  });
  $("devices").replaceChildren(...items);
  const online = devices.filter((d) => d.online).length;
  $("device-count").textContent = devices.length ? `${online} online` : "";
  show($("devices-empty"), devices.length === 0);
}

function renderSessions() {
  const sessions = Array.from(state.sessions, ([id, s]) => ({ id, ...s }));
  sessions.sort((a, b) => (a.connected_at < b.connected_at ? 1 : -1));
  const items = sessions.map((s) =>
    el(
      "li",
      { cls: "session", attrs: { "data-connection-id": s.id, "data-device-id": s.device_id } },
      el(
        "div",
        { cls: "session-top" },
        el("span", { cls: "session-device", text: s.device_id }),
        el("span", { cls: "session-since", attrs: { title: s.connected_at }, text: ago(s.connected_at) }),
      ),
      el(
        "dl",
        { cls: "session-facts" },
        el("dt", { text: "Connection" }),
        el("dd", { cls: "mono", text: s.id }),
        el("dt", { text: "Since" }),
        el("dd", { text: clock(s.connected_at, { seconds: true }) }),
        s.node_id ? el("dt", { text: "Node" }) : null,
        s.node_id ? el("dd", { cls: "mono session-node", text: s.node_id }) : null,
      ),
    ),
  );
  $("sessions").replaceChildren(...items);
  $("session-count").textContent = items.length ? String(items.length) : "";
  const empty = $("sessions-empty");
  empty.textContent = state.sessionsKnown ? "No device is connected." : "Loading…";
  show(empty, items.length === 0);
}

// ---- wiring -------------------------------------------------------------------------

function init() {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const appId = $("login-app-id").value.trim();
    const token = $("login-token").value.trim();
    if (!appId || !token) {
      showLogin(describe("MISSING_PARAMS"));
      return;
    }
    signIn({ appId, token });
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("refresh").addEventListener("click", () => reloadConversations());
  $("composer").addEventListener("submit", onSend);
  const input = $("composer-input");
  input.addEventListener("input", onComposerInput);
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  input.addEventListener("blur", stopTyping);
  // Relative times ("3 min ago") age without any event.
  setInterval(() => {
    if (state.creds) renderSessions();
  }, 30000);

  const saved = loadCredentials();
  if (saved) {
    $("login-app-id").value = saved.appId;
    signIn(saved);
  } else {
    showLogin();
  }
}

init();
