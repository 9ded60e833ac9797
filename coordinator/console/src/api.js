// The console's only way to the coordinator: the REST API under /api/v1 with the operator's
// bearer token (kept in sessionStorage: gone when the tab closes), and the live event stream.

const KEY = 'floe.token';
const WHO = 'floe.who';
let onSignedOut = () => {};

// Roles that change things (the coordinator's role matrix, SECURITY.md): admin and operator.
// A viewer's console shows no write buttons; the server refuses them anyway (403).
const WRITERS = ['admin', 'operator'];

export const session = {
  token: () => sessionStorage.getItem(KEY),
  set: (t, who) => {
    sessionStorage.setItem(KEY, t);
    sessionStorage.setItem(WHO, JSON.stringify(who || {}));
  },
  clear: () => {
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(WHO);
  },
  /** `{name, role}` of the signed-in token (from GET /whoami at sign-in). */
  who: () => {
    try {
      return JSON.parse(sessionStorage.getItem(WHO) || '{}');
    } catch {
      return {};
    }
  },
  canWrite: () => WRITERS.includes(session.who().role),
  onSignedOut: (f) => {
    onSignedOut = f;
  },
};

/** An API answer that is not 2xx: status plus the API's {code, message, field}. */
export class ApiError extends Error {
  constructor(status, detail) {
    super(detail?.message || `HTTP ${status}`);
    this.status = status;
    this.code = detail?.code;
    this.field = detail?.field;
  }
}

function headers(token, json) {
  const h = { Authorization: `Bearer ${token}` };
  if (json) h['Content-Type'] = 'application/json';
  return h;
}

/** Calls `path` (under /api/v1) and returns the parsed JSON (or text for non-JSON answers). */
export async function api(path, { method = 'GET', body, token = session.token(), raw = false } = {}) {
  const r = await fetch(`/api/v1${path}`, {
    method,
    headers: headers(token, body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let data = text;
  if ((r.headers.get('content-type') || '').includes('json') && text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!r.ok) {
    if (r.status === 401 && token === session.token()) {
      session.clear();
      onSignedOut();
    }
    throw new ApiError(r.status, data?.error || { message: typeof data === 'string' ? data : '' });
  }
  return raw ? text : data;
}

/** Builds a query string from the set (non-empty) values of `q`. */
export function qs(q) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) if (v !== undefined && v !== null && v !== '') p.set(k, v);
  const s = p.toString();
  return s ? `?${s}` : '';
}

/**
 * Live updates: the Server-Sent Events stream GET /api/v1/events?deployment=ID, read with fetch() (an
 * EventSource cannot send the Authorization header) and resumed with Last-Event-ID after a
 * break; when the coordinator has no such route (404) or refuses the request, polls instead:
 * `onChange()` once a second. `onChange(event|null)` is called for each event (debounce in the
 * caller); with the stream it also re-reads every 5 s. Returns { stop(), mode() } where mode is
 * 'connecting', 'events' or 'polling'.
 */
export function live(filter, onChange) {
  let stopped = false;
  let mode = 'connecting';
  let lastId = null;
  let timer = null;
  let ctrl = null;

  const poll = () => {
    mode = 'polling';
    clearInterval(timer);
    timer = setInterval(() => !stopped && onChange(null), 1000);
  };

  const connect = async () => {
    if (stopped) return;
    ctrl = new AbortController();
    const h = { ...headers(session.token(), false), Accept: 'text/event-stream' };
    if (lastId !== null) h['Last-Event-ID'] = String(lastId);
    let r;
    try {
      r = await fetch(`/api/v1/events${qs(filter)}`, { headers: h, signal: ctrl.signal });
    } catch {
      if (!stopped) setTimeout(connect, 1000);
      return;
    }
    if (!r.ok || !r.body || !(r.headers.get('content-type') || '').includes('text/event-stream')) {
      // No stream here (404 before the events route existed, or refused): poll.
      try {
        r.body?.cancel();
      } catch {
        /* nothing to release */
      }
      if (!stopped) poll();
      return;
    }
    mode = 'events';
    onChange(null); // catch up with what happened before the stream opened
    // A slow re-read as well, so a change no event announces still shows within seconds.
    clearInterval(timer);
    timer = setInterval(() => !stopped && onChange(null), 5000);
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || stopped) break;
        buf += value.replace(/\r\n?/g, '\n');
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const frame = buf.slice(0, end);
          buf = buf.slice(end + 2);
          let data = '';
          for (const line of frame.split('\n')) {
            if (line.startsWith('id:')) lastId = line.slice(3).trim();
            else if (line.startsWith('data:')) data += line.slice(5).trimStart();
          }
          if (!data) continue;
          let ev = null;
          try {
            ev = JSON.parse(data);
          } catch {
            ev = null;
          }
          onChange(ev);
        }
      }
    } catch {
      /* the stream broke: reconnect below */
    }
    if (!stopped) {
      mode = 'connecting';
      setTimeout(connect, 1000);
    }
  };

  connect();
  return {
    stop() {
      stopped = true;
      clearInterval(timer);
      ctrl?.abort();
    },
    mode: () => mode,
  };
}

export function fmtTime(s) {
  if (!s) return '—';
  const d = new Date(s);
  return Number.isNaN(d.getTime()) ? s : d.toLocaleString();
}

export function ago(s) {
  if (!s) return 'never';
  const secs = Math.round((Date.now() - new Date(s).getTime()) / 1000);
  if (!Number.isFinite(secs)) return s;
  if (secs < 60) return `${Math.max(secs, 0)} s ago`;
  if (secs < 3600) return `${Math.round(secs / 60)} min ago`;
  if (secs < 86400) return `${Math.round(secs / 3600)} h ago`;
  return `${Math.round(secs / 86400)} d ago`;
}
