// The chat page: sign-in, conversations, streamed answers, the account. Talks to the API
// only through ChatApi (api.js); renders model text as Markdown through an allow-list
// sanitiser (DOMPurify), never as raw HTML.
(function () {
  'use strict';
  const { api, chat, session, ApiError, OfflineError } = window.ChatApi;
  const $ = (id) => document.getElementById(id);

  // --- Markdown, safely ------------------------------------------------------------
  // What an answer may contain once rendered: text structure, code, tables and links to
  // http(s)/mailto. No images (no remote loads), no attributes that run or style anything.
  const PURIFY = {
    ALLOWED_TAGS: ['a', 'b', 'blockquote', 'br', 'code', 'del', 'em', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6',
      'hr', 'i', 'li', 'ol', 'p', 'pre', 's', 'strong', 'table', 'tbody', 'td', 'th', 'thead', 'tr', 'ul'],
    ALLOWED_ATTR: ['href', 'title', 'start', 'align'],
    ALLOWED_URI_REGEXP: /^(?:https?:|mailto:)/i,
    ALLOW_DATA_ATTR: false,
    RETURN_TRUSTED_TYPE: true,
  };
  DOMPurify.addHook('afterSanitizeAttributes', (node) => {
    if (node.tagName === 'A') {
      node.setAttribute('target', '_blank');
      node.setAttribute('rel', 'noopener noreferrer nofollow');
    }
  });
  function renderMarkdown(element, text) {
    const html = marked.parse(text, { gfm: true, async: false });
    element.innerHTML = DOMPurify.sanitize(html, PURIFY);
  }

  // --- State -------------------------------------------------------------------------
  const state = {
    models: [],
    conversation: null, // the open conversation's id; null: a new chat
    conversationsCursor: null,
    messagesCursor: null,
    turn: null, // the chat being read: {stop(), finished}
    countdown: null,
    offline: null, // the Retry of the offline alert shown, if any
  };

  // --- Alerts ------------------------------------------------------------------------
  function clearAlert(where = $('alert')) {
    if (where === $('alert')) {
      if (state.countdown) clearInterval(state.countdown);
      state.countdown = null;
      state.offline = null;
    }
    where.replaceChildren();
  }

  // Shows `text`, with a button doing `action` if given.
  function alertText(text, action, where = $('alert')) {
    clearAlert(where);
    const p = document.createElement('span');
    p.textContent = text;
    where.append(p);
    if (action) {
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'secondary';
      button.textContent = action.label;
      button.addEventListener('click', () => { clearAlert(where); action.run(); });
      where.append(button);
    }
  }

  // An error as people read it. `retry` repeats what failed.
  function showError(err, retry, where = $('alert')) {
    if (err instanceof OfflineError) {
      const action = retry && { label: 'Retry', run: retry };
      alertText('You seem to be offline, or the server cannot be reached.', action, where);
      if (where === $('alert')) state.offline = action;
      return;
    }
    if (!(err instanceof ApiError)) {
      alertText(`Something went wrong: ${err.message}`, null, where);
      return;
    }
    if (err.status === 401 && err.code !== 'invalid_credentials') {
      // A dead token. Several calls may find out at once; the first one signs out.
      if (session.token) signedOut('Your session has ended (expired or logged out elsewhere). Please log in again.');
      return;
    }
    if (err.status === 402) {
      if (typeof err.body.tokens === 'number') setBalance(err.body.tokens);
      alertText(err.detail, null, where);
      return;
    }
    if (err.status === 429 && err.retryAfter) {
      let left = err.retryAfter;
      const tick = () => {
        alertText(`${err.detail} Try again in ${left} s.`, null, where);
        if (where === $('alert')) state.countdown = timer;
      };
      const timer = setInterval(() => {
        left -= 1;
        if (left <= 0) {
          clearInterval(timer);
          alertText(err.detail + ' You can try again now.', retry && { label: 'Try again', run: retry }, where);
        } else {
          tick();
        }
      }, 1000);
      tick();
      return;
    }
    if (err.status >= 500 || err.status === 429) {
      alertText(err.detail, retry && { label: 'Try again', run: retry }, where);
      return;
    }
    alertText(err.detail, null, where);
  }

  // --- Balance -----------------------------------------------------------------------
  function setBalance(tokens) {
    if (typeof tokens !== 'number' || !Number.isFinite(tokens)) return;
    const el = $('balance');
    el.textContent = `${tokens} credits`;
    el.hidden = false;
  }
  async function refreshBalance() {
    try {
      const { data } = await api.balance();
      setBalance(data.tokens);
    } catch (err) {
      showError(err, refreshBalance);
    }
  }

  // --- Signing in and out ------------------------------------------------------------
  function showSignIn() {
    $('signin').hidden = false;
    $('chat').hidden = true;
    for (const id of ['balance', 'who', 'account-open', 'logout']) $(id).hidden = true;
    $('username').focus();
  }

  function showChat() {
    $('signin').hidden = true;
    $('chat').hidden = false;
    $('who').textContent = session.username || '';
    for (const id of ['who', 'account-open', 'logout']) $(id).hidden = false;
  }

  function signedOut(message) {
    if (state.turn) state.turn.stop();
    ChatApi.live.disconnect();
    session.clear();
    $('message').value = ''; // a draft is the signed-out user's, not the next one's
    $('conversations').replaceChildren();
    $('messages').replaceChildren();
    $('balance').textContent = '';
    if ($('account').open) $('account').close();
    showSignIn();
    if (message) alertText(message);
  }

  async function start() {
    showChat();
    clearAlert();
    newChat(false);
    loadModels();
    refreshBalance();
    ChatApi.live.connect(setBalance); // the balance moves live, and Stop really stops
    await loadConversations(false);
    $('message').focus();
  }

  function credentials() {
    return [$('username').value.trim(), $('password').value];
  }

  async function logIn(event) {
    if (event) event.preventDefault();
    const [username, password] = credentials();
    clearAlert();
    try {
      const { data } = await api.login(username, password);
      session.save(data.token, username);
      $('password').value = '';
      await start();
    } catch (err) {
      showError(err, () => logIn());
    }
  }

  async function signUp() {
    const [username, password] = credentials();
    clearAlert();
    try {
      await api.register(username, password);
      await logIn();
    } catch (err) {
      showError(err, signUp);
    }
  }

  async function logOut() {
    try {
      await api.logout();
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) {
        showError(err, logOut);
        return;
      }
    }
    signedOut('You are logged out.');
  }

  // --- Models ------------------------------------------------------------------------
  async function loadModels() {
    try {
      const { data } = await api.models();
      state.models = data.models;
      const select = $('model');
      select.replaceChildren(...data.models.map((m) => {
        const option = document.createElement('option');
        option.value = m.id;
        option.textContent = `${m.id} (${m.cost} credits a message)`;
        option.selected = m.default;
        return option;
      }));
    } catch (err) {
      showError(err, loadModels);
    }
  }

  // --- Conversations -----------------------------------------------------------------
  function conversationItem(c) {
    const li = document.createElement('li');
    li.dataset.id = c.id;
    if (c.id === state.conversation) li.setAttribute('aria-current', 'true');
    const open = document.createElement('button');
    open.type = 'button';
    open.className = 'open';
    open.textContent = c.title;
    open.title = c.title;
    open.addEventListener('click', () => openConversation(c));
    const rename = document.createElement('button');
    rename.type = 'button';
    rename.className = 'link';
    rename.textContent = 'Rename';
    rename.setAttribute('aria-label', `Rename ${c.title}`);
    rename.addEventListener('click', () => startRename(li, c));
    const remove = document.createElement('button');
    remove.type = 'button';
    remove.className = 'link';
    remove.textContent = 'Delete';
    remove.setAttribute('aria-label', `Delete ${c.title}`);
    remove.addEventListener('click', () => removeConversation(c));
    li.append(open, rename, remove);
    return li;
  }

  async function loadConversations(more) {
    try {
      const { data } = await api.conversations(more ? state.conversationsCursor : null);
      const items = data.conversations.map(conversationItem);
      if (more) $('conversations').append(...items);
      else $('conversations').replaceChildren(...items);
      state.conversationsCursor = data.next_cursor;
      $('more-conversations').hidden = !data.next_cursor;
    } catch (err) {
      showError(err, () => loadConversations(more));
    }
  }

  function markCurrent() {
    for (const li of $('conversations').children) {
      if (li.dataset.id === state.conversation) li.setAttribute('aria-current', 'true');
      else li.removeAttribute('aria-current');
    }
  }

  function startRename(li, c) {
    const form = document.createElement('form');
    const label = document.createElement('label');
    label.className = 'visually-hidden';
    label.htmlFor = `title-${c.id}`;
    label.textContent = 'New title';
    const input = document.createElement('input');
    input.id = `title-${c.id}`;
    input.value = c.title;
    input.maxLength = 200;
    const save = document.createElement('button');
    save.type = 'submit';
    save.textContent = 'Save';
    form.append(label, input, save);
    form.addEventListener('keydown', (e) => { if (e.key === 'Escape') li.replaceWith(conversationItem(c)); });
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      try {
        const { data } = await api.rename(c.id, input.value);
        const item = conversationItem(data);
        li.replaceWith(item);
        if (state.conversation === c.id) $('thread-title').textContent = data.title;
        item.querySelector('.open').focus();
      } catch (err) {
        showError(err);
      }
    });
    li.replaceChildren(form);
    input.focus();
    input.select();
  }

  async function removeConversation(c) {
    if (!window.confirm(`Delete "${c.title}" and all its messages? This cannot be undone.`)) return;
    try {
      await api.remove(c.id);
      const li = [...$('conversations').children].find((x) => x.dataset.id === c.id);
      if (li) li.remove();
      if (state.conversation === c.id) newChat(true);
    } catch (err) {
      showError(err, () => removeConversation(c));
    }
  }

  // --- Messages ----------------------------------------------------------------------
  function article(kind, heading) {
    const el = document.createElement('article');
    el.className = kind;
    const h = document.createElement('h3');
    h.textContent = heading;
    const body = document.createElement('div');
    body.className = 'text';
    el.append(h, body);
    return el;
  }

  function userArticle(text) {
    const el = article('user', 'You');
    el.querySelector('.text').textContent = text; // the user's own words, as typed
    return el;
  }

  function answerArticle(text, model) {
    const el = article('answer', model ? `Answer (${model})` : 'Answer');
    if (text) renderMarkdown(el.querySelector('.text'), text);
    return el;
  }

  // What became of an answer whose stream ended with an `error` event.
  function failureNote(data) {
    if (data.charged === true) {
      const cost = typeof data.cost === 'number' ? ` (${data.cost} credits)` : '';
      return `The model stopped this answer midway (${data.finish_reason || data.code}). `
        + `The words above are kept in this conversation and were charged${cost}.`;
    }
    if (data.charged === false) {
      return `The answer failed (${data.detail}). You were not charged, and it is not kept.`;
    }
    return `The answer failed (${data.detail}). Whether it was charged is not known yet; `
      + 'the conversation and the balance will tell shortly.';
  }

  // Why a stored answer ended, when that is worth saying.
  function endingNote(finishReason) {
    if (!finishReason || finishReason === 'STOP') return null;
    if (finishReason === 'MAX_TOKENS') return 'This answer reached its length limit.';
    if (finishReason === 'CANCELLED') return 'Stopped on request; the words above were charged.';
    return `The model stopped this answer midway (${finishReason}); the words above were charged.`;
  }

  function note(el, text) {
    const p = document.createElement('p');
    p.className = 'note';
    p.textContent = text;
    el.append(p);
  }

  function newChat(focus) {
    if (state.turn) state.turn.stop();
    state.conversation = null;
    state.messagesCursor = null;
    $('messages').replaceChildren();
    $('earlier').hidden = true;
    $('thread-title').textContent = 'New chat';
    markCurrent();
    if (focus) $('message').focus();
  }

  async function openConversation(c) {
    if (state.turn) state.turn.stop();
    state.conversation = c.id;
    $('thread-title').textContent = c.title;
    if (state.models.some((m) => m.id === c.model)) $('model').value = c.model;
    $('messages').replaceChildren();
    markCurrent();
    await loadMessages(false);
    $('message').focus();
  }

  async function loadMessages(earlier) {
    const conversation = state.conversation;
    try {
      const { data } = await api.messages(conversation, earlier ? state.messagesCursor : null);
      if (state.conversation !== conversation) return;
      const nodes = [];
      for (const m of data.messages.slice().reverse()) {
        const answer = answerArticle(m.response, m.model);
        const ending = endingNote(m.finish_reason);
        if (ending) note(answer, ending);
        nodes.push(userArticle(m.message), answer);
      }
      const list = $('messages');
      if (earlier) {
        list.prepend(...nodes);
      } else {
        list.replaceChildren(...nodes);
        list.scrollTop = list.scrollHeight;
      }
      state.messagesCursor = data.next_cursor;
      $('earlier').hidden = !data.next_cursor;
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        alertText('That conversation no longer exists.');
        newChat(true);
        loadConversations(false);
        return;
      }
      showError(err, () => loadMessages(earlier));
    }
  }

  // --- Sending -----------------------------------------------------------------------
  function streaming(on) {
    $('send').hidden = on;
    $('stop').hidden = !on;
    if (!on && document.activeElement === document.body) $('message').focus();
  }

  async function send(event, again) {
    if (event) event.preventDefault();
    if (state.turn) return;
    const text = again || $('message').value;
    if (!text.trim()) return;
    clearAlert();
    const list = $('messages');
    const question = userArticle(text);
    const answer = answerArticle('', $('model').value);
    const body = answer.querySelector('.text');
    answer.setAttribute('aria-busy', 'true'); // read out once, when complete
    list.append(question, answer);
    list.scrollTop = list.scrollHeight;
    $('message').value = '';

    let written = '';
    let pending = false;
    const paint = () => {
      pending = false;
      renderMarkdown(body, written);
      list.scrollTop = list.scrollHeight;
    };
    const request = { message: text, conversation_id: state.conversation, model: $('model').value };
    const turn = chat(request, {
      start(data) {
        setBalance(data.tokens_remaining);
        if (!state.conversation) {
          state.conversation = data.conversation_id;
        }
      },
      delta(data) {
        written += data.text;
        if (!pending) {
          pending = true;
          requestAnimationFrame(paint);
        }
      },
      done(data) {
        if (typeof data.response === 'string') written = data.response;
        paint();
        setBalance(data.tokens_remaining);
        const ending = endingNote(data.finish_reason);
        if (ending) note(answer, ending);
      },
      error(data) {
        // The stream ended early; the API says whether the words received were charged.
        note(answer, failureNote(data));
        alertText(data.detail);
        if (typeof data.tokens_remaining === 'number') setBalance(data.tokens_remaining);
        else refreshBalance();
      },
    });
    state.turn = turn;
    streaming(true);
    try {
      const { stopped, refunded } = await turn.finished;
      if (stopped && refunded) {
        answer.remove();
        question.remove();
        alertText('Stopped before the answer began; you were not charged.');
      } else if (stopped) {
        paint();
        note(answer, 'Stopped. The answer is still being written on the server; it is kept in this conversation and charged.');
      }
      loadConversations(false).then(() => {
        const current = [...$('conversations').children].find((li) => li.dataset.id === state.conversation);
        if (current) $('thread-title').textContent = current.querySelector('.open').textContent;
      });
    } catch (err) {
      question.remove();
      answer.remove();
      $('message').value = text;
      if (err instanceof ApiError && err.balance !== null) setBalance(err.balance);
      showError(err, () => send(null, text));
    } finally {
      answer.removeAttribute('aria-busy');
      state.turn = null;
      streaming(false);
    }
  }

  function stop() {
    if (state.turn) state.turn.stop();
    $('message').focus();
  }

  // --- Account -----------------------------------------------------------------------
  function when(epochSeconds) {
    return new Date(epochSeconds * 1000).toLocaleString();
  }

  async function openAccount() {
    clearAlert($('account-alert'));
    $('account').showModal();
    try {
      const { data } = await api.sessions();
      $('sessions').replaceChildren(...data.sessions.map((s) => {
        const li = document.createElement('li');
        li.textContent = `${s.current ? 'This browser' : 'Another session'}: signed in ${when(s.created_at)}, last used ${when(s.last_used)}`;
        return li;
      }));
    } catch (err) {
      showError(err, openAccount, $('account-alert'));
    }
  }

  // The API ends every session at once (this one too); signing in again right after
  // leaves this browser as the only one.
  async function logOutOthers(event) {
    event.preventDefault();
    const password = $('others-password').value;
    const username = session.username;
    try {
      await api.logoutAll();
      session.clear();
      const { data } = await api.login(username, password);
      session.save(data.token, username);
      $('others-password').value = '';
      await openAccount();
      alertText('Every other session is logged out.', null, $('account-alert'));
    } catch (err) {
      if (!session.token) {
        signedOut('Every session is logged out; log in again.');
        return;
      }
      showError(err, null, $('account-alert'));
    }
  }

  async function changePassword(event) {
    event.preventDefault();
    try {
      const { data } = await api.changePassword($('old-password').value, $('new-password').value);
      $('old-password').value = '';
      $('new-password').value = '';
      await openAccount();
      alertText(data.detail, null, $('account-alert'));
    } catch (err) {
      showError(err, null, $('account-alert'));
    }
  }

  async function deleteAccount(event) {
    event.preventDefault();
    if (!window.confirm('Delete your account, its conversations and its credits? This cannot be undone.')) return;
    try {
      // A long history is deleted over several requests: 202 means "repeat the same
      // request"; the account stays closed meanwhile.
      const password = $('delete-password').value;
      for (;;) {
        const { data } = await api.deleteAccount(password);
        if (!data || data.code !== 'deletion_in_progress') break;
        alertText('Deleting your history…', null, $('account-alert'));
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
      $('delete-password').value = '';
      signedOut('Your account is deleted.');
    } catch (err) {
      showError(err, null, $('account-alert'));
    }
  }

  // --- Wiring ------------------------------------------------------------------------
  $('signin-form').addEventListener('submit', logIn);
  $('signup').addEventListener('click', signUp);
  $('logout').addEventListener('click', logOut);
  $('new-chat').addEventListener('click', () => newChat(true));
  $('more-conversations').addEventListener('click', () => loadConversations(true));
  $('earlier').addEventListener('click', () => loadMessages(true));
  $('composer').addEventListener('submit', send);
  $('stop').addEventListener('click', stop);
  $('message').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $('composer').requestSubmit();
    }
  });
  $('account-open').addEventListener('click', openAccount);
  $('account-close').addEventListener('click', () => $('account').close());
  $('account').addEventListener('close', () => $('account-open').focus());
  $('others-form').addEventListener('submit', logOutOthers);
  $('password-form').addEventListener('submit', changePassword);
  $('delete-form').addEventListener('submit', deleteAccount);
  // Back online: say so, and keep the way to repeat what failed.
  window.addEventListener('online', () => {
    if (state.offline !== null && $('alert').textContent.includes('offline')) {
      alertText('The network is back.', state.offline);
    }
  });

  // First render needs nothing from the API: the stored token decides the view.
  if (session.token) start();
  else showSignIn();
})();
