// The server's routes (docs/serving.md, "The simulator"; docs/api.md for /api/v1).
// Every call answers the parsed JSON or throws an Error whose message is the server's.

async function call(method, url, body) {
  const init = { method, headers: {} };
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
    throw err;
  }
  return data;
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
