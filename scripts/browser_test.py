"""The chat page in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`) driven by Selenium, against the local API that scripts/e2e.py started
with the Gemini stand-in. Controls are found by their accessible names and roles, the way
assistive technology finds them; axe-core checks the sign-in and chat pages.

`install()` brings what is missing (before the API starts: nothing is written into the
tree while it runs); `run()` drives the page and the cross-origin checks and writes
screenshots into target/screenshots/ (ignored by git)."""

import http.server
import json
import os
import shutil
import socketserver
import subprocess
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SELENIUM_VERSION = "4.51.0"
AXE_VERSION = "4.14.1"
VENV = os.path.join(ROOT, ".local", "browser")
AXE_DIR = os.path.join(ROOT, ".local", "axe")
AXE_JS = os.path.join(AXE_DIR, "node_modules", "axe-core", "axe.min.js")
SHOTS = os.path.join(ROOT, "target", "screenshots")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,900"]


def _run(cmd):
    done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return None if done.returncode == 0 else (done.stdout + done.stderr)[-2000:]


def install():
    """Chromium and its driver (apt, as root), Selenium (its own virtualenv), axe-core
    (npm, never served to users). Returns an error message, or None."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        if os.geteuid() != 0:
            return "chromium and chromium-driver are missing: apt-get install chromium chromium-driver"
        print("browser: installing chromium and chromium-driver (apt-get)")
        env_cmd = ["env", "DEBIAN_FRONTEND=noninteractive"]
        err = _run(env_cmd + ["apt-get", "update", "-qq"]) or _run(
            env_cmd + ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"])
        if err:
            return err
    python = os.path.join(VENV, "bin", "python")
    have = subprocess.run([python, "-c", "import selenium; print(selenium.__version__)"],
                          capture_output=True, text=True) if os.path.exists(python) else None
    if not have or have.stdout.strip() != SELENIUM_VERSION:
        print(f"browser: installing selenium {SELENIUM_VERSION} into {os.path.relpath(VENV, ROOT)}")
        err = _run(["python3", "-m", "venv", VENV]) or _run(
            [os.path.join(VENV, "bin", "pip"), "install", "--quiet", "--disable-pip-version-check",
             f"selenium=={SELENIUM_VERSION}"])
        if err:
            return err
    if not os.path.exists(AXE_JS):
        print(f"browser: installing axe-core {AXE_VERSION} into {os.path.relpath(AXE_DIR, ROOT)}")
        os.makedirs(AXE_DIR, exist_ok=True)
        err = _run(["npm", "install", "--no-save", "--silent", "--prefix", AXE_DIR, f"axe-core@{AXE_VERSION}"])
        if err:
            return err
    return None


def python():
    return os.path.join(VENV, "bin", "python")


# --- The other origins (the CORS test) ---------------------------------------------------
# A frontend hosted elsewhere: a page whose script streams a chat from the API.
FRONTEND_HTML = """<!doctype html><meta charset="utf-8"><title>Another origin</title>
<pre id="out">waiting</pre><script src="client.js"></script>"""
FRONTEND_JS = """
(async () => {
  const out = document.getElementById('out');
  const [api, token] = decodeURIComponent(location.hash.slice(1)).split(' ');
  const auth = { Authorization: 'Token ' + token, 'Content-Type': 'application/json' };
  try {
    const json = await fetch(api + '/api/chat/', { method: 'POST', headers: auth,
      body: JSON.stringify({ message: 'from another origin', conversation_id: null }) });
    const balance = json.headers.get('X-Tokens-Remaining');
    const res = await fetch(api + '/api/chat/', { method: 'POST',
      headers: { ...auth, Accept: 'text/event-stream' },
      body: JSON.stringify({ message: '[standin:long=60] streamed across origins', conversation_id: null }) });
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let text = '', reads = 0;
    for (;;) { const { value, done } = await reader.read(); if (done) break; text += value; reads += 1; }
    const events = text.split('\\n').filter((l) => l.startsWith('event:')).map((l) => l.slice(6).trim());
    out.textContent = JSON.stringify({ ok: true, balance, events, reads });
  } catch (err) {
    out.textContent = JSON.stringify({ ok: false, error: String(err) });
  }
})();
"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve_frontend(directory, port=0):
    """A static server for `directory` on a loopback port (a free one by default), in a
    thread. `shutdown()` and `server_close()` stop it."""
    handler = lambda *a, **kw: _Quiet(*a, directory=directory, **kw)  # noqa: E731
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    server = socketserver.ThreadingTCPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def frontend_dir():
    d = tempfile.mkdtemp(prefix="frontend-")
    with open(os.path.join(d, "index.html"), "w") as f:
        f.write(FRONTEND_HTML)
    with open(os.path.join(d, "client.js"), "w") as f:
        f.write(FRONTEND_JS)
    return d


# --- The browser run --------------------------------------------------------------------
# Runs under Selenium's own interpreter (the virtualenv): e2e.py calls `main` through it.
def main(base, allowed_frontend_port, other_frontend_port, results_path, profile):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    results = []

    def check(name, ok, detail=""):
        results.append({"name": name, "ok": bool(ok), "detail": "" if ok else str(detail)[:1500]})
        print(("ok   " if ok else "FAIL ") + name + ("" if ok else f" {str(detail)[:300]}"), flush=True)

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        drive(driver, base, allowed_frontend_port, other_frontend_port, check)
    except Exception as err:  # a page that never shows what is waited for is a failed check
        check("the browser run completes", False, repr(err)[:1500])
    finally:
        driver.quit()
        with open(results_path, "w") as f:
            json.dump(results, f)


def drive(driver, base, allowed_frontend_port, other_frontend_port, check):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver.set_script_timeout(30)
    shutil.rmtree(SHOTS, ignore_errors=True)
    os.makedirs(SHOTS, exist_ok=True)
    wait = lambda secs=15: WebDriverWait(driver, secs, poll_frequency=0.05)  # noqa: E731

    def named(role, name, within=None):
        """The visible element with this role and accessible name, as assistive
        technology computes them."""
        css = {"button": "button", "textbox": "input, textarea", "combobox": "select",
               "navigation": "nav", "status": "[role=status]", "alert": "[role=alert]", "log": "[role=log]"}[role]
        for el in (within or driver).find_elements(By.CSS_SELECTOR, css):
            try:
                if el.is_displayed() and el.aria_role == role and el.accessible_name == name:
                    return el
            except StaleElementReferenceException:  # re-rendered while looked at
                continue
        return None

    def until_named(role, name, secs=15):
        return wait(secs).until(lambda d: named(role, name))

    def balance_text():
        el = named("status", "Balance")
        return el.text if el else ""

    def alert_text():
        return " ".join(el.text for el in driver.find_elements(By.CSS_SELECTOR, "[role=alert]") if el.is_displayed())

    def answers():
        return driver.find_elements(By.CSS_SELECTOR, "[role=log] article.answer")

    def type_message(text, send=True):
        box = until_named("textbox", "Message")
        box.click()
        box.send_keys(text)
        if send:
            box.send_keys(Keys.ENTER)

    def wait_done(secs=30):
        wait(secs).until(lambda d: named("button", "Send") is not None and named("button", "Stop") is None)

    axe_source = open(AXE_JS).read()

    def axe(label):
        driver.execute_script(axe_source)
        found = driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations.map("
            "v => ({id: v.id, impact: v.impact, nodes: v.nodes.length}))), e => done([{id: String(e), impact: 'critical'}]));")
        bad = [v for v in found if v["impact"] in ("serious", "critical")]
        check(f"axe: no serious or critical violations on the {label}", not bad, bad)

    try:
        # Sign-in page.
        driver.get(base + "/")
        until_named("button", "Log in")
        check("GET / shows the sign-in form with labelled fields",
              named("textbox", "Username") and named("textbox", "Password") and named("button", "Sign up"))
        check("no inline script in the page",
              driver.execute_script("return document.querySelectorAll('script:not([src])').length") == 0)
        driver.save_screenshot(os.path.join(SHOTS, "signin.png"))
        axe("sign-in page")

        # Too many failed logins: the 429's Retry-After counts down in the alert.
        ghost = f"ghost{int(time.time() * 1000) % 10**9}"
        named("textbox", "Username").send_keys(ghost)
        for attempt in range(10):
            driver.execute_script("document.getElementById('alert').replaceChildren()")
            named("textbox", "Password").clear()
            named("textbox", "Password").send_keys(f"wrong-password-{attempt}")
            named("button", "Log in").click()
            wait().until(lambda d: alert_text())
            if "Try again in" in alert_text():
                break
        first = alert_text()
        time.sleep(2.2)
        later = alert_text()
        seconds = lambda text: int(text.split("Try again in ")[1].split(" ")[0]) if "Try again in " in text else None  # noqa: E731
        check("a 429 counts down from its Retry-After",
              seconds(first) is not None and seconds(later) is not None and 1 <= seconds(first) - seconds(later) <= 3,
              (first, later))
        named("textbox", "Username").clear()
        named("textbox", "Password").clear()

        # The API's own error message, shown as it says it.
        user = f"web{int(time.time() * 1000) % 10**9}"
        named("textbox", "Username").send_keys(user)
        named("textbox", "Password").send_keys("short")
        named("button", "Sign up").click()
        wait().until(lambda d: "8 characters" in alert_text())
        check("a short password shows the API's detail in an alert", "at least 8 characters" in alert_text(), alert_text())

        named("textbox", "Password").clear()
        named("textbox", "Password").send_keys("web-password")
        named("button", "Sign up").click()
        wait().until(lambda d: "4000" in balance_text())
        check("sign up: the balance shows 4000", "4000" in balance_text(), balance_text())
        wait().until(lambda d: d.switch_to.active_element.accessible_name == "Message")
        check("focus goes to the message box", True)

        model = until_named("combobox", "Model")
        wait().until(lambda d: len(Select(model).options) >= 2)
        labels = [o.text for o in Select(model).options]
        check("the model picker lists each model with its price",
              any("100 credits" in t for t in labels) and any("40 credits" in t for t in labels), labels)

        # Shift+Enter is a new line, not a send.
        box = until_named("textbox", "Message")
        box.send_keys("first line", Keys.SHIFT, Keys.ENTER, Keys.SHIFT, "second line")
        check("Shift+Enter starts a new line and sends nothing",
              box.get_attribute("value") == "first line\nsecond line" and not answers(), box.get_attribute("value"))
        box.clear()

        # A long answer streams: its text is seen growing before the stream ends.
        type_message("[standin:long=120] Tell me a long story")
        lengths, busy_seen = [], False
        deadline = time.time() + 30
        while time.time() < deadline:
            state = driver.execute_script(
                "const a = [...document.querySelectorAll('[role=log] article.answer')].pop();"
                "return a ? [a.querySelector('.text').textContent.length, a.getAttribute('aria-busy')] : [0, null];")
            if state[1] == "true":
                busy_seen = True
                lengths.append(state[0])
                if state[0] > 300 and not os.path.exists(os.path.join(SHOTS, "streamed.png")):
                    driver.save_screenshot(os.path.join(SHOTS, "streamed.png"))  # mid-stream
            elif busy_seen:
                break
            time.sleep(0.05)
        growing = sorted(set(n for n in lengths if n > 0))
        check("the answer's text is seen growing before the stream ends", len(growing) >= 3, lengths[:40])
        wait_done()
        final = answers()[-1].text
        check("the whole answer is shown once done", "stand-in keeps talking" in final and len(final) > (growing or [0])[-1] - 1,
              final[:200])
        wait().until(lambda d: "3900" in balance_text())
        check("the balance is 3900 without a reload", "3900" in balance_text(), balance_text())

        # Reload: the session survives, the conversation is in the sidebar and opens.
        driver.refresh()
        nav = wait().until(lambda d: named("navigation", "Conversations"))
        item = wait().until(lambda d: next((b for b in nav.find_elements(By.CSS_SELECTOR, "button.open")
                                            if "Tell me a long story" in b.text), None))
        check("after a reload the session holds and the conversation is listed", item is not None and "3900" in balance_text())
        item.click()
        wait().until(lambda d: len(answers()) == 1)
        articles = driver.find_elements(By.CSS_SELECTOR, "[role=log] article")
        check("opening it shows its messages as articles in the log",
              len(articles) == 2 and "Tell me a long story" in articles[0].text and "stand-in" in articles[1].text,
              [a.text[:60] for a in articles])

        # Rename.
        title = item.text
        named("button", f"Rename {title}").click()
        field = until_named("textbox", "New title")
        field.clear()
        field.send_keys("Story time", Keys.ENTER)
        wait().until(lambda d: named("button", "Rename Story time"))
        driver.refresh()
        check("rename: the new title is listed after a reload",
              wait().until(lambda d: named("button", "Rename Story time")) is not None)

        # A new chat with the cheaper model charges its price.
        until_named("button", "New chat").click()
        Select(until_named("combobox", "Model")).select_by_value("gemini-flash-lite-latest")
        type_message("Hello on the cheaper model")
        wait_done()
        wait().until(lambda d: "3860" in balance_text())
        check("a new chat on the cheaper model costs 40 (3860)", "3860" in balance_text(), balance_text())
        check("the new chat is a second conversation",
              len(named("navigation", "Conversations").find_elements(By.CSS_SELECTOR, "button.open")) == 2)

        # Markdown renders; hostile HTML and links stay inert. Anything the sanitiser let
        # through would be stopped by the CSP, which would report it here.
        driver.execute_script("window.__violations = [];"
                              "document.addEventListener('securitypolicyviolation', e => window.__violations.push(e.violatedDirective + ' ' + e.sourceFile));")
        type_message("[standin:hostile] show me everything")
        wait_done()
        wait().until(lambda d: "3820" in balance_text())
        time.sleep(0.3)
        inert = driver.execute_script("""
            const log = document.querySelector('[role=log]');
            const last = [...log.querySelectorAll('article.answer')].pop();
            const hover = [...last.querySelectorAll('*')].find(e => e.textContent === 'hover me');
            if (hover) hover.dispatchEvent(new MouseEvent('mouseover', {bubbles: true}));
            return {
              pwned: window.__pwned === undefined ? null : String(window.__pwned),
              violations: window.__violations,
              dangerous: last.querySelectorAll('script, img, iframe, object, embed, style').length,
              handlers: [...last.querySelectorAll('*')].filter(e => [...e.attributes].some(a => a.name.startsWith('on'))).length,
              hrefs: [...last.querySelectorAll('a')].map(a => a.getAttribute('href')),
              strong: last.querySelectorAll('strong').length,
              items: last.querySelectorAll('li').length,
              code: last.querySelectorAll('pre code').length,
            };""")
        check("markdown renders: bold, a list, a code block, a safe link",
              inert["strong"] >= 1 and inert["items"] >= 2 and inert["code"] == 1
              and "https://example.com/docs" in inert["hrefs"], inert)
        bad_links = [h for h in inert["hrefs"] if h and not h.startswith(("https:", "http:", "mailto:"))]
        check("hostile answer is inert: nothing ran, no script/img/iframe, no handlers, no javascript: links",
              inert["pwned"] is None and inert["dangerous"] == 0 and inert["handlers"] == 0 and not bad_links, inert)
        # DOMPurify parses the answer in a document of its own, where the CSP refuses the
        # inline handlers before DOMPurify drops them; nothing else may need refusing.
        stray = [v for v in inert["violations"] if "purify" not in v]
        check("the CSP had nothing to refuse outside the sanitiser's own parsing", not stray, inert["violations"])
        axe("chat page")

        # Dark: the system's scheme is followed, and stays readable.
        light_bg = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia",
                               {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
        dark_bg = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
        rgb = [int(x) for x in dark_bg[dark_bg.index("(") + 1:dark_bg.index(")")].split(",")[:3]]
        check("prefers-color-scheme: dark gives a dark page", sum(rgb) < 150 and dark_bg != light_bg, (light_bg, dark_bg))
        driver.save_screenshot(os.path.join(SHOTS, "dark.png"))
        axe("chat page, dark")
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})

        # 503 from the model: shown with a retry, and refunded.
        type_message("[standin:503] are you there?")
        wait().until(lambda d: "try again" in alert_text().lower())
        check("a 503 is shown with a Try again button", named("button", "Try again") is not None, alert_text())
        time.sleep(0.5)
        check("and costs nothing (still 3820)", "3820" in balance_text(), balance_text())

        # A second tab of the same user, open while the first one chats: its balance must
        # move without a reload (pushed over its WebSocket).
        first_tab = driver.current_window_handle
        driver.switch_to.new_window("tab")
        driver.get(base + "/")
        wait().until(lambda d: "3820" in balance_text())
        second_tab = driver.current_window_handle
        time.sleep(1.0)  # its WebSocket opens
        driver.switch_to.window(first_tab)

        # Stop mid-stream, over the WebSocket: Gemini is stopped; the words given are the
        # answer, kept and charged once.
        until_named("textbox", "Message").clear()
        type_message("[standin:long=300] a very long story please")
        wait().until(lambda d: len(answers()[-1].text) > 80 if answers() else False)
        until_named("button", "Stop").click()
        wait().until(lambda d: named("button", "Send") is not None)
        wait().until(lambda d: "Stopped on request" in answers()[-1].text)
        stopped = answers()[-1].text
        check("Stop really stops: the answer ends where it got, kept and charged",
              named("button", "Stop") is None and "Stopped on request; the words above were charged" in stopped,
              stopped[-200:])
        time.sleep(1.0)
        check("no more text arrives after Stop", answers()[-1].text == stopped)
        wait().until(lambda d: "3780" in balance_text())
        check("the stopped answer was charged (3780)", "3780" in balance_text(), balance_text())
        driver.switch_to.window(second_tab)
        wait(10).until(lambda d: "3780" in balance_text())
        check("the other tab's balance moved without a reload (3780)", "3780" in balance_text(), balance_text())
        driver.close()
        driver.switch_to.window(first_tab)

        # Deleting a conversation asks first; declining keeps it.
        until_named("button", "Delete Story time").click()
        wait().until(lambda d: d.switch_to.alert).dismiss()
        time.sleep(0.3)
        check("declining the confirmation keeps the conversation", named("button", "Delete Story time") is not None)
        until_named("button", "Delete Story time").click()
        wait().until(lambda d: d.switch_to.alert).accept()
        wait().until(lambda d: named("button", "Delete Story time") is None)
        driver.refresh()
        wait().until(lambda d: named("button", "New chat"))
        time.sleep(0.5)
        check("a confirmed delete removes it, for good",
              named("button", "Delete Story time") is None and "3780" in balance_text(),
              named("navigation", "Conversations").text)

        # The account: sessions, logging out the others, a new password.
        other = login(base, user, "web-password")
        until_named("button", "Account").click()
        dialog = driver.find_element(By.ID, "account")
        wait().until(lambda d: len(dialog.find_elements(By.CSS_SELECTOR, "#sessions li")) == 2)
        check("the account lists both sessions, this browser's marked",
              "This browser" in dialog.find_element(By.ID, "sessions").text)
        until_named("textbox", "Password").send_keys("web-password")
        until_named("button", "Log out other sessions").click()
        wait().until(lambda d: "Every other session" in dialog.find_element(By.ID, "account-alert").text)
        check("log out the others: this browser stays, the other token is refused",
              len(dialog.find_elements(By.CSS_SELECTOR, "#sessions li")) == 1 and status_of(base, other) == 401,
              (dialog.find_element(By.ID, "sessions").text, status_of(base, other)))
        until_named("textbox", "Current password").send_keys("web-password")
        until_named("textbox", "New password").send_keys("new-web-password")
        until_named("button", "Change password").click()
        wait().until(lambda d: "Password changed" in dialog.find_element(By.ID, "account-alert").text,
                     "no confirmation: " + dialog.find_element(By.ID, "account-alert").text)
        check("change password: the API's confirmation is shown and the new one logs in",
              bool(login(base, user, "new-web-password")))
        until_named("button", "Close").click()
        check("the balance is still shown after all that", "3780" in balance_text(), balance_text())

        # Phone width.
        driver.set_window_size(390, 844)
        time.sleep(0.3)
        wide = driver.execute_script(
            "return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > "
            "document.documentElement.clientWidth + 1).map(e => e.tagName + '#' + e.id + '.' + e.className).slice(0, 8)")
        check("phone width: nothing overflows sideways", not wide, wide)
        driver.save_screenshot(os.path.join(SHOTS, "phone.png"))
        driver.set_window_size(1280, 900)

        # Log out: the old token is refused.
        token = driver.execute_script("return localStorage.getItem('chat.token')")
        until_named("button", "Log out").click()
        until_named("button", "Log in")
        check("log out returns to the sign-in form and forgets the token",
              driver.execute_script("return localStorage.getItem('chat.token')") is None)
        status = status_of(base, token)
        check("the logged-out token is refused (401)", status == 401, status)

        # A dead token in storage: back to sign-in, with a message.
        driver.execute_script("localStorage.setItem('chat.token', arguments[0]);"
                              "localStorage.setItem('chat.username', 'web')", token)
        driver.refresh()
        wait().until(lambda d: "session has ended" in alert_text())
        check("a dead token returns to sign-in with a message", named("button", "Log in") is not None, alert_text())

        # 402: the seeded user with 50 credits.
        named("textbox", "Username").send_keys("broke")
        named("textbox", "Password").send_keys("demo-password")
        named("button", "Log in").click()
        wait().until(lambda d: "50" in balance_text())
        type_message("Can I afford this?")
        wait().until(lambda d: "Not enough credits" in alert_text())
        check("402 shows the API's detail with the price and the balance",
              "costs 100" in alert_text() and "have 50" in alert_text() and "50" in balance_text(), alert_text())

        # Deleting the account (after a confirmation): back to sign-in, and the name is free.
        until_named("button", "Account").click()
        until_named("textbox", "Password, to confirm").send_keys("demo-password")
        until_named("button", "Delete my account").click()
        wait().until(lambda d: d.switch_to.alert).accept()
        wait().until(lambda d: "account is deleted" in alert_text())
        check("delete the account: signed out with a message, and the old login fails",
              named("button", "Log in") is not None and status_of_login(base, "broke", "demo-password") == 401,
              alert_text())

        # A long history: 21 turns in one conversation, then 20 more conversations.
        reader = f"reader{int(time.time() * 1000) % 10**9}"
        reader_token = register_and_login(base, reader, "reader-password")
        cheap = {"model": "gemini-flash-lite-latest"}
        first_turn = api_chat(base, reader_token, {"message": "turn 1", "conversation_id": None, **cheap})
        for n in range(2, 22):
            api_chat(base, reader_token, {"message": f"turn {n}",
                                          "conversation_id": first_turn["conversation_id"], **cheap})
        for n in range(20):
            api_chat(base, reader_token, {"message": f"topic {n}", "conversation_id": None, **cheap})
        named("textbox", "Username").clear()
        named("textbox", "Username").send_keys(reader)
        named("textbox", "Password").clear()
        named("textbox", "Password").send_keys("reader-password")
        named("button", "Log in").click()
        wait().until(lambda d: "2360" in balance_text())
        items = lambda: named("navigation", "Conversations").find_elements(By.CSS_SELECTOR, "button.open")  # noqa: E731
        wait().until(lambda d: len(items()) == 20)
        check("the sidebar shows a page of 20 conversations, most recent first, and Load more",
              items()[0].text == "topic 19" and named("button", "Load more") is not None, [i.text for i in items()[:3]])
        named("button", "Load more").click()
        wait().until(lambda d: len(items()) == 21)
        check("Load more brings the oldest conversation", items()[-1].text == "turn 1", [i.text for i in items()[-2:]])
        items()[-1].click()
        log_articles = lambda: driver.find_elements(By.CSS_SELECTOR, "[role=log] article")  # noqa: E731
        wait().until(lambda d: len(log_articles()) == 40)
        check("opening it shows its latest 20 turns, the newest last, and Load earlier",
              "turn 21" in log_articles()[-2].text and "turn 2" in log_articles()[0].text
              and named("button", "Load earlier") is not None, [a.text[:20] for a in log_articles()[:2]])
        named("button", "Load earlier").click()
        wait().until(lambda d: len(log_articles()) == 42)
        check("Load earlier adds the first turn above, and is gone at the start",
              "turn 1" in log_articles()[0].text and named("button", "Load earlier") is None,
              [a.text[:20] for a in log_articles()[:2]])

        # Offline: the message is kept and a Retry sends it once the network is back.
        driver.execute_cdp_cmd("Network.enable", {})
        offline = {"latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}
        driver.execute_cdp_cmd("Network.emulateNetworkConditions", {**offline, "offline": True})
        type_message("sent while offline")
        wait().until(lambda d: "offline" in alert_text())
        check("offline: an alert with Retry, and the message is kept in the box",
              named("button", "Retry") is not None
              and until_named("textbox", "Message").get_attribute("value") == "sent while offline",
              (alert_text(), until_named("textbox", "Message").get_attribute("value")))
        driver.execute_cdp_cmd("Network.emulateNetworkConditions", {**offline, "offline": False})
        named("button", "Retry").click()
        wait().until(lambda d: "2320" in balance_text())
        wait_done()
        check("Retry sends it once back online (charged once: 2320)",
              "sent while offline" in log_articles()[-2].text and balance(base, reader_token) == 2320,
              balance_text())

        # A stream the model stops midway for the prompt's sake: its words are charged, and
        # the page says so; a stream that breaks is not charged, and the page says that.
        until_named("textbox", "Message").clear()
        type_message("[standin:midsafety=3] go on")
        wait_done()
        wait().until(lambda d: "2280" in balance_text())
        stopped = answers()[-1].text
        check("stopped midway by the model: the page says the words were charged, the balance follows",
              "were charged" in stopped and "SAFETY" in stopped and balance(base, reader_token) == 2280, stopped[-200:])
        type_message("[standin:drop=3] go on")
        wait_done()
        wait().until(lambda d: "not charged" in answers()[-1].text)
        time.sleep(0.3)
        check("a broken stream: the page says it was not charged, the balance stays",
              "2280" in balance_text() and balance(base, reader_token) == 2280,
              (answers()[-1].text[-200:], balance_text()))
    except Exception:  # a timeout waiting for the page is a failed check, not a crash
        check("the page run completes", False, traceback.format_exc()[-1500:])

    # Another origin: the listed one streams a chat; any other is blocked by the browser.
    api_token = login(base, "demo", "demo-password")
    before = balance(base, api_token)
    for port, listed in ((allowed_frontend_port, True), (other_frontend_port, False)):
        origin = f"http://127.0.0.1:{port}"
        try:
            driver.get(f"{origin}/#{base}%20{api_token}")
            out = WebDriverWait(driver, 30, 0.1).until(
                lambda d: d.find_element(By.ID, "out").text if d.find_element(By.ID, "out").text != "waiting" else None)
            got = json.loads(out)
        except Exception as err:
            got = {"ok": None, "error": repr(err)[:500]}
        if listed:
            check("a page on a listed origin streams a chat (start, deltas, done) and reads X-Tokens-Remaining",
                  got.get("ok") and got["events"][0] == "start" and got["events"][-1] == "done"
                  and got["events"].count("delta") > 1 and got.get("balance") == str(before - 100), got)
        else:
            check("a page on another origin is blocked by the browser", got.get("ok") is False, got)
    after = balance(base, api_token)
    check("the blocked origin's chat never ran (only the listed origin's two were charged)",
          after == before - 200, (before, after))


def login(base, username, password):
    req = urllib.request.Request(base + "/api/login/", data=json.dumps({"username": username, "password": password}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    return json.loads(urllib.request.urlopen(req, timeout=30).read())["token"]


def register_and_login(base, username, password):
    req = urllib.request.Request(base + "/api/register/", data=json.dumps({"username": username, "password": password}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(req, timeout=30).read()
    return login(base, username, password)


def api_chat(base, token, body):
    req = urllib.request.Request(base + "/api/chat/", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Token {token}"})
    return json.loads(urllib.request.urlopen(req, timeout=60).read())


def status_of(base, token):
    """The status `GET /api/tokens/` gets with this token."""
    try:
        req = urllib.request.Request(base + "/api/tokens/", headers={"Authorization": f"Token {token}"})
        return urllib.request.urlopen(req, timeout=30).status
    except urllib.error.HTTPError as err:
        return err.code


def status_of_login(base, username, password):
    try:
        login(base, username, password)
        return 200
    except urllib.error.HTTPError as err:
        return err.code


def balance(base, token):
    req = urllib.request.Request(base + "/api/tokens/", headers={"Authorization": f"Token {token}"})
    return json.loads(urllib.request.urlopen(req, timeout=30).read())["tokens"]


def run(r, base, frontends, profile):
    """Runs `main` under Selenium's interpreter and records its checks on `r` (e2e's
    Results). `frontends`: (listed port, other port) of the servers from serve_frontend."""
    results_path = os.path.join(profile + ".results.json")
    started = time.time()
    try:
        proc = subprocess.run([python(), os.path.abspath(__file__), base, str(frontends[0]), str(frontends[1]),
                               results_path, profile], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=600, cwd=tempfile.gettempdir(),
                              env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
        output = proc.stdout
    except subprocess.TimeoutExpired as err:
        output = (err.stdout or b"").decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
        output += "\nbrowser run timed out after 600 s"
    try:
        with open(results_path) as f:
            results = json.load(f)
        os.remove(results_path)
    except (OSError, ValueError):
        results = []
    for line in output.splitlines():
        if not line.startswith(("ok   ", "FAIL ")):
            print(f"  browser | {line}")
    for res in results:
        r.check(f"browser: {res['name']}", res["ok"], res["detail"])
    r.check(f"browser: the run finished ({time.time() - started:.0f} s)", bool(results), output[-2000:])


if __name__ == "__main__":
    import sys
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
