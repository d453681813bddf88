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
  // {stop(), finished}: `stop` ends the reading, `finished` settles when the answer is
  // over ({stopped}) or rejects with ApiError/OfflineError when it never started. Only
  // Server-Sent Events today; another transport (a WebSocket) goes beside it in
  // `transports`, and `chat` picks.
  const transports = { sse: sseChat };

  function chat(request, handlers) {
    return transports.sse(request, handlers);
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

  window.ChatApi = { api, chat, session, ApiError, OfflineError, transports };
})();
