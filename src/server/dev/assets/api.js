// The server's routes (docs/simulator.md; docs/api.md for /api/v1).
// Every call answers the parsed JSON or throws an Error whose message is the server's.
//
// A bot with api.key (always so beside a real number, with dev.enabled) answers 401
// without it: the page then asks for the key once, keeps it for this tab
// (sessionStorage) and sends it as Authorization: Bearer on every call, the event
// stream included (which is why the stream is read with fetch: EventSource cannot send
// a header, and a key in the URL would end up in logs).

const KEY = "parlance.dev.key";
let askKey = async () => null;
let asking = null;

/// `prompt(message)` asks the designer for the key: it resolves to the key, or null
/// when they cancel.
export function onKeyNeeded(prompt) {
  askKey = prompt;
}

function withKey(headers) {
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = `Bearer ${key}`;
  return headers;
}

/// The server refused the key (or there was none): ask once, however many calls were
/// refused at the same moment. Resolves to whether there is a new key to try.
async function newKey(message) {
  if (!asking) {
    asking = askKey(message).then((key) => {
      asking = null;
      if (!key) return false;
      sessionStorage.setItem(KEY, key);
      return true;
    });
  }
  return asking;
}

async function call(method, url, body) {
  for (;;) {
    const res = await once(method, url, body);
    if (res.status === 401 && (await newKey(res.message))) continue;
    if (res.error) throw res.error;
    return res.data;
  }
}

async function once(method, url, body) {
  const init = { method, headers: withKey({}) };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(url, init);
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (!res.ok) {
    // /api/v1 answers {"error": {"code", "message"}}; the dev routes may answer text.
    const message =
      (data && data.error && (data.error.message || data.error)) ||
      (typeof data === "string" && data) ||
      `${res.status} ${res.statusText}`;
    const err = new Error(typeof message === "string" ? message : JSON.stringify(message));
    err.status = res.status;
    err.code = data && data.error && data.error.code;
    return { status: res.status, message: err.message, error: err };
  }
  return { status: res.status, data };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/// The live stream (`/dev/api/events`, server-sent events) read with fetch, so it can
/// carry the key. `onEvent(name, data)` for each event; `onOpen` when (re)connected;
/// `onDrop` when it broke (it reconnects after a second, as EventSource would).
export async function subscribe({ onEvent, onOpen, onDrop }) {
  for (;;) {
    try {
      const res = await fetch("/dev/api/events", { headers: withKey({ Accept: "text/event-stream" }) });
      if (res.status === 401) {
        let message = "the simulator asks for the bot's api.key";
        try {
          message = (await res.json()).error.message || message;
        } catch {
          // The default message.
        }
        if (!(await newKey(message))) await sleep(5000);
        continue;
      }
      if (!res.ok || !res.body) throw new Error(`${res.status} ${res.statusText}`);
      onOpen();
      await readEvents(res.body, onEvent);
    } catch {
      // Reconnected below.
    }
    onDrop();
    await sleep(1000);
  }
}

/// Splits a text/event-stream body into events (comment lines, such as keep-alives and
/// "missed n events", are skipped).
async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line === "" || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let v = colon < 0 ? "" : line.slice(colon + 1);
        if (v.startsWith(" ")) v = v.slice(1);
        if (field === "event") name = v;
        else if (field === "data") data.push(v);
      }
      if (data.length) onEvent(name, data.join("\n"));
    }
  }
}

const u = (user) => encodeURIComponent(user);

export const api = {
  info: () => call("GET", "/dev/api/info"),
  send: (body) => call("POST", "/dev/api/message", body),
  history: (user) => call("GET", `/dev/api/users/${u(user)}/history`),
  read: (user) => call("POST", `/dev/api/users/${u(user)}/read`),
  reset: (user) => call("POST", `/dev/api/users/${u(user)}/reset`),
  clock: (body) => call("POST", "/dev/api/clock", body),
  graph: (flow) => call("GET", `/dev/api/graph?flow=${encodeURIComponent(flow)}`),
  record: (body) => call("POST", "/dev/api/record", body),
  trace: (user) => call("GET", `/api/v1/users/${u(user)}/trace`),
  handovers: () => call("GET", "/api/v1/handovers?limit=500"),
  handover: (id) => call("GET", `/api/v1/handovers/${encodeURIComponent(id)}`),
  accept: (id, agent) => call("POST", `/api/v1/handovers/${encodeURIComponent(id)}/accept`, { agent }),
  agentSay: (id, text) => call("POST", `/api/v1/handovers/${encodeURIComponent(id)}/messages`, { text }),
  resolve: (id, body) => call("POST", `/api/v1/handovers/${encodeURIComponent(id)}/resolve`, body),
};
