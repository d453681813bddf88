// The API client: every call the page makes, and how a chat's answer reaches it.
// No DOM here. Paths are relative, so the page works under any stage prefix (…/prod/).
(function () {
  'use strict';

  // Errors as the API sends them: {"detail", "code"} plus the headers a person needs.
  class ApiError extends Error {
    constructor(status, body, headers) {
      const detail = (body && typeof body.detail === 'string') ? body.detail : `The server answered ${status}.`;
      super(detail);
      this.status = status;
      this.code = body && body.code;
      this.body = body || {};
      this.detail = detail;
      const retry = Number.parseInt(headers.get('Retry-After') || '', 10);
      this.retryAfter = Number.isFinite(retry) ? retry : null;
      const balance = headers.get('X-Tokens-Remaining');
      this.balance = balance === null ? null : Number(balance);
    }
  }

  // The network failed before any answer: offline, or the server can't be reached.
  class OfflineError extends Error {}

  // The session token: the only secret the page keeps.
  const TOKEN = 'chat.token';
  const USER = 'chat.username';
  const session = {
    get token() { return localStorage.getItem(TOKEN); },
    get username() { return localStorage.getItem(USER); },
    save(token, username) { localStorage.setItem(TOKEN, token); localStorage.setItem(USER, username); },
    clear() { localStorage.removeItem(TOKEN); localStorage.removeItem(USER); },
  };

  function headers(extra) {
    const h = new Headers(extra || {});
    const token = session.token;
    if (token) h.set('Authorization', `Token ${token}`);
    return h;
  }

  async function send(method, path, body, opts) {
    const init = { method, headers: headers(opts && opts.headers), cache: 'no-store', signal: opts && opts.signal };
    if (body !== undefined) {
      init.headers.set('Content-Type', 'application/json');
      init.body = JSON.stringify(body);
    }
    try {
      return await fetch(path, init);
    } catch (err) {
      if (err.name === 'AbortError') throw err;
      throw new OfflineError('The server could not be reached.');
    }
  }

  async function failure(res) {
    let body = null;
    try { body = await res.json(); } catch (_) { /* not JSON: a gateway's own page */ }
    return new ApiError(res.status, body, res.headers);
  }

  // One JSON call: the parsed body (null for 204), and the balance header if any.
  async function request(method, path, body) {
    const res = await send(method, path, body);
    if (!res.ok) throw await failure(res);
    const balance = res.headers.get('X-Tokens-Remaining');
    const data = res.status === 204 ? null : await res.json();
    return { data, balance: balance === null ? null : Number(balance) };
  }

  const q = (params) => {
    const s = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined) s.set(k, v);
    const text = s.toString();
    return text ? `?${text}` : '';
  };
  const id = (value) => encodeURIComponent(value);

  const api = {
    register: (username, password) => request('POST', 'api/register/', { username, password }),
    login: (username, password) => request('POST', 'api/login/', { username, password }),
    logout: () => request('POST', 'api/logout/'),
    logoutAll: () => request('POST', 'api/logout/all/'),
    sessions: () => request('GET', 'api/sessions/'),
    changePassword: (oldPassword, newPassword) =>
      request('POST', 'api/password/', { old_password: oldPassword, new_password: newPassword }),
    deleteAccount: (password) => request('DELETE', 'api/account/', { password }),
    balance: () => request('GET', 'api/tokens/'),
    models: () => request('GET', 'api/models/'),
    conversations: (cursor) => request('GET', `api/conversations/${q({ limit: 20, cursor })}`),
    // Newest first: the page shows the latest turns and loads earlier ones on demand.
    messages: (conversation, cursor) =>
      request('GET', `api/conversations/${id(conversation)}/messages/${q({ limit: 20, order: 'newest', cursor })}`),
    rename: (conversation, title) => request('PATCH', `api/conversations/${id(conversation)}/`, { title }),
    remove: (conversation) => request('DELETE', `api/conversations/${id(conversation)}/`),
  };

  // How a chat's answer reaches the page. A transport takes the chat request and handlers
  // {start, delta, done, error} (the API's stream events) and returns
  // {stop(), finished}: `stop` ends the answer, `finished` settles when the answer is
  // over ({stopped, refunded}) or rejects with ApiError/OfflineError when it never
  // started. Over the WebSocket, when it is open, Stop really stops Gemini; otherwise
  // Server-Sent Events, where Stop only stops the reading.
  const transports = { sse: sseChat, ws: wsChat };

  function chat(request, handlers) {
    // A browser that says it is offline gets the HTTP path, which fails at once and keeps
    // the message: a socket may linger open for a while after the network went away.
    const ws = live.open && navigator.onLine !== false;
    return ws ? transports.ws(request, handlers) : transports.sse(request, handlers);
  }

  // The WebSocket API, when the deployment has one (POST api/ws-ticket/ says where): one
  // connection per tab, opened with a single-use ticket, carrying chats and the balance
  // the server pushes after any charge or refund, from this tab or any other screen.
  const live = { ws: null, open: false, turns: new Map(), onBalance: null, wanted: false, retry: 0, timer: null };

  async function connectLive(onBalance) {
    live.onBalance = onBalance;
    live.wanted = true;
    if (live.ws || live.unavailable || !session.token || typeof WebSocket === 'undefined') return;
    let ticket;
    try {
      ({ data: ticket } = await request('POST', 'api/ws-ticket/'));
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) live.unavailable = true; // no WebSocket API here
      else reconnectLive();
      return;
    }
    if (!live.wanted || live.ws) return;
    const ws = new WebSocket(`${ticket.url}?ticket=${encodeURIComponent(ticket.ticket)}`);
    live.ws = ws;
    ws.onopen = () => { live.open = true; live.retry = 0; };
    ws.onmessage = (event) => {
      let frame;
      try { frame = JSON.parse(event.data); } catch (_) { return; }
      if (frame.type === 'balance') {
        if (live.onBalance) live.onBalance(frame.tokens);
      } else if (live.turns.has(frame.request_id)) {
        live.turns.get(frame.request_id)(frame);
      }
    };
    ws.onclose = () => {
      if (live.ws !== ws) return;
      live.ws = null;
      live.open = false;
      for (const turn of [...live.turns.values()]) turn({ type: 'closed' });
      reconnectLive();
    };
  }

  function reconnectLive() {
    if (!live.wanted || live.timer) return;
    const wait = Math.min(30000, 1000 * 2 ** live.retry);
    live.retry += 1;
    live.timer = setTimeout(() => { live.timer = null; connectLive(live.onBalance); }, wait);
  }

  function disconnectLive() {
    live.wanted = false;
    clearTimeout(live.timer);
    live.timer = null;
    const ws = live.ws;
    live.ws = null;
    live.open = false;
    if (ws) ws.close();
  }

  // The HTTP status an `error` frame's code stands for, so the page treats it as it
  // treats the same error from POST /api/chat/.
  const STATUS = {
    malformed_json: 400, invalid_field: 400, not_authenticated: 401, invalid_token: 401, token_expired: 401,
    insufficient_credits: 402, not_found: 404, idempotency_in_progress: 409, content_blocked: 422,
    idempotency_key_reused: 422, too_many_chats_in_flight: 429, chat_rate_exceeded: 429, model_error: 502,
    model_unavailable: 503, service_unavailable: 503, model_timeout: 504,
  };

  // {"action": "chat"} on the open WebSocket; its frames are the stream's events.
  function wsChat(request, handlers) {
    const id = crypto.randomUUID();
    let started = false;
    let stopped = false;
    const finished = new Promise((resolve, reject) => {
      live.turns.set(id, (frame) => {
        const handler = handlers[frame.type];
        if (frame.type === 'start' || frame.type === 'delta') {
          started = true;
          if (handler) handler(frame);
          return;
        }
        live.turns.delete(id);
        if (frame.type === 'done') {
          if (handler) handler(frame);
          resolve({ stopped: false });
        } else if (frame.type === 'error' && frame.code === 'cancelled') {
          resolve({ stopped: true, refunded: true }); // stopped before any word: not charged
        } else if (frame.type === 'error' && started) {
          if (handler) handler(frame);
          resolve({ stopped: false });
        } else if (frame.type === 'error') {
          const err = new ApiError(STATUS[frame.code] || 500, frame, new Headers());
          if (typeof frame.tokens === 'number') err.balance = frame.tokens;
          reject(err);
        } else if (stopped) {
          resolve({ stopped: true });
        } else {
          reject(new OfflineError('The connection broke while the answer was streaming.'));
        }
      });
    });
    live.ws.send(JSON.stringify({ action: 'chat', ...request, request_id: id }));
    return {
      stop() {
        stopped = true;
        if (live.open) live.ws.send(JSON.stringify({ action: 'cancel', request_id: id }));
      },
      finished,
    };
  }

  // POST /api/chat/ with Accept: text/event-stream, read with fetch and a stream reader
  // (EventSource can only GET).
  function sseChat(request, handlers) {
    const controller = new AbortController();
    let stopped = false;
    const finished = (async () => {
      let res;
      try {
        res = await send('POST', 'api/chat/', request, {
          headers: { Accept: 'text/event-stream' }, signal: controller.signal,
        });
      } catch (err) {
        if (stopped) return { stopped: true };
        throw err;
      }
      if (!res.ok) throw await failure(res);
      try {
        await readEvents(res.body, (name, data) => {
          const handler = handlers[name];
          if (handler) handler(data);
        });
      } catch (err) {
        if (stopped) return { stopped: true };
        throw new OfflineError('The connection broke while the answer was streaming.');
      }
      return { stopped: false };
    })();
    return {
      stop() { stopped = true; controller.abort(); },
      finished,
    };
  }

  // Server-Sent Events from a byte stream: `event:` and `data:` lines, a blank line ends
  // an event. The API's data is one JSON line per event.
  async function readEvents(body, onEvent) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    let name = 'message';
    let data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let newline;
      while ((newline = buffer.search(/\r?\n/)) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + (buffer[newline] === '\r' ? 2 : 1));
        if (line === '') {
          if (data.length) {
            let parsed = null;
            try { parsed = JSON.parse(data.join('\n')); } catch (_) { parsed = null; }
            if (parsed !== null) onEvent(name, parsed);
          }
          name = 'message';
          data = [];
        } else if (line.startsWith('event:')) {
          name = line.slice(6).trim();
        } else if (line.startsWith('data:')) {
          data.push(line.slice(5).replace(/^ /, ''));
        }
      }
    }
  }

  window.ChatApi = {
    api, chat, session, ApiError, OfflineError, transports,
    live: { connect: connectLive, disconnect: disconnectLive, get open() { return live.open; } },
  };
})();
