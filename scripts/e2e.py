#!/usr/bin/env python3
"""End to end: start the local API the way the README does (scripts/dev), drive
register -> login -> chat -> tokens over HTTP on loopback, chat over the WebSocket API
with a real WebSocket client (scripts/e2e_ws.py), use the chat page in a real browser
(scripts/browser_test.py: headless Chromium, the page's own origin and two others for
CORS), run the contract test (schemathesis against openapi.yaml) on the same API, stop it
as Ctrl-C would, and check that nothing it started is still running. Standard library
only; schemathesis, `websockets` and Selenium run from their own virtualenvs under
.local/."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import browser_test

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_TIMEOUT = 900  # a cold machine compiles the functions first

# The contract test: schemathesis from PyPI, pinned, in its own virtualenv.
SCHEMATHESIS_VERSION = "4.32.5"
SCHEMATHESIS_VENV = os.path.join(ROOT, ".local", "schemathesis")
# What every response is checked for. The first five are the contract proper; the others
# check the 405 + Allow of undocumented methods and the 401 of a call without a token.
CONTRACT_CHECKS = ",".join([
    "not_a_server_error", "status_code_conformance", "response_schema_conformance",
    "content_type_conformance", "response_headers_conformance",
    "unsupported_method", "allow_header_conformance", "ignored_auth",
])
CONTRACT_SEED = 1
# The WebSocket client library, pinned, in its own virtualenv.
WEBSOCKETS_VERSION = "17.4"
WEBSOCKETS_VENV = os.path.join(ROOT, ".local", "websockets")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Results:
    def __init__(self):
        self.passed, self.failed = 0, 0
        self.log = None  # the scripts/dev log, kept when something failed

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"ok   {name}")
        else:
            self.failed += 1
            print(f"FAIL {name} {detail}")


def call(base, method, path, body=None, token=None, raw=None, content_type="application/json"):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(base + path, data=data, method=method)
    if data is not None and content_type:
        req.add_header("Content-Type", content_type)
    if token:
        req.add_header("Authorization", f"Token {token}")
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read() or b"null")


def install_schemathesis():
    return install(SCHEMATHESIS_VENV, "schemathesis", SCHEMATHESIS_VERSION)


def install(venv, package, version):
    """Installs the pinned `package` into its virtualenv unless it is there. Returns an
    error message, or None. (Before the API starts: `cargo lambda watch` restarts every
    function when files in the tree change.)"""
    python = os.path.join(venv, "bin", "python")
    if os.path.exists(python):
        have = subprocess.run([python, "-c", f"import importlib.metadata as m; print(m.version('{package}'))"],
                              capture_output=True, text=True)
        if have.stdout.strip() == version:
            return None
    print(f"e2e: installing {package} {version} into {os.path.relpath(venv, ROOT)}")
    script = (f'python3 -m venv "{venv}" && "{venv}/bin/pip" install --quiet '
              f'--disable-pip-version-check "{package}=={version}"')
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return None if done.returncode == 0 else (done.stdout + done.stderr)[-2000:]


def signed_in(base, username, sessions=1):
    """Registers `username` and logs it in `sessions` times; returns the tokens."""
    password = f"{username}-password"
    status, _, body = call(base, "POST", "/api/register/", {"username": username, "password": password})
    if status != 201:
        raise RuntimeError(f"register {username}: {status} {body}")
    tokens = []
    for _ in range(sessions):
        status, _, body = call(base, "POST", "/api/login/", {"username": username, "password": password})
        if status != 200:
            raise RuntimeError(f"login {username}: {status} {body}")
        tokens.append(body["token"])
    return tokens


def contract(r, base, name, token, operations, max_examples, headers=()):
    """One schemathesis run against the running API, with the document it serves, as a
    signed-in user. Its output is printed with a `st |` prefix (scripts/test counts the
    run as one check, not its own tallies)."""
    spec = call(base, "GET", "/api/openapi.json")[2]
    # Routes the contract documents ahead of their code (`x-pending-routes` in
    # openapi.yaml, the one place to change) are skipped until they are served.
    pending = spec.get("x-pending-routes", [])
    cmd = [os.path.join(SCHEMATHESIS_VENV, "bin", "st"), "run", f"{base}/api/openapi.json", "--url", base,
           "--checks", CONTRACT_CHECKS, "--max-examples", str(max_examples), "--seed", str(CONTRACT_SEED),
           "--workers", "1", "--request-timeout", "60", "--generation-with-security-parameters", "false",
           "--generation-database", "none", "--no-color", "-H", f"Authorization: Token {token}"]
    for header in headers:
        cmd += ["-H", header]
    if pending:
        cmd += ["--exclude-path-regex", "^(" + "|".join(re.escape(p) for p in pending) + ")$"]
    if operations.get("include"):
        for op in operations["include"]:
            cmd += ["--include-operation-id", op]
    for op in operations.get("exclude", []):
        cmd += ["--exclude-operation-id", op]
    # Nothing may be written inside the tree while the API runs (a change restarts every
    # function mid-request): no bytecode for the hooks, and the working directory elsewhere.
    env = dict(os.environ, SCHEMATHESIS_HOOKS=os.path.join(ROOT, "scripts", "contract_hooks.py"),
               PYTHONDONTWRITEBYTECODE="1")
    print(f"e2e: contract ({name}): schemathesis {SCHEMATHESIS_VERSION}, seed {CONTRACT_SEED}, "
          f"up to {max_examples} examples per operation, checks {CONTRACT_CHECKS}")
    if pending:
        print(f"e2e: contract: not served yet, skipped: {' '.join(pending)}")
    started = time.time()
    try:
        run = subprocess.run(cmd, cwd=tempfile.gettempdir(), env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
        output, code = run.stdout, run.returncode
    except subprocess.TimeoutExpired as err:
        output = err.stdout or b""
        output = output.decode(errors="replace") if isinstance(output, bytes) else output
        code = "timeout after 900 s"
    for line in output.splitlines():
        print(f"  st | {line}")
    r.check(f"contract: {name} ({time.time() - started:.0f} s)", code == 0, f"exit={code}")

def stream(base, path, body, token):
    """A streamed chat: [(event, data, seconds since the request)] as the events arrive."""
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    req.add_header("Accept", "text/event-stream")
    req.add_header("Authorization", f"Token {token}")
    start, events, name = time.monotonic(), [], None
    with urllib.request.urlopen(req, timeout=120) as resp:
        if resp.headers.get("Content-Type") != "text/event-stream":
            return resp.status, []
        for raw in resp:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event:"):
                name = line[len("event:"):].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line[len("data:"):]), time.monotonic() - start))
        return resp.status, events


def leftovers(markers):
    """Processes whose command line or environment names one of this run's unique
    ports: DynamoDB Local, the stand-in, cargo lambda watch and the functions it ran."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read().decode(errors="replace")
        except OSError:
            continue
        if any(m in cmd or m in environ for m in markers):
            found.append(f"{pid}: {cmd.strip()}")
    return found


def main():
    ports = {"DYNAMODB_PORT": free_port(), "API_PORT": free_port(), "GEMINI_STANDIN_PORT": free_port(),
             "WS_PORT": free_port(), "WS_MANAGEMENT_PORT": free_port()}
    # A frontend on another origin that the API lets in (the CORS test); a second one on
    # another free port is not on the list.
    frontend_port = free_port()
    # CHATS_PER_MINUTE: the browser test writes a long history (41 chats) for one user
    # within a minute to page through; the rate limit itself is tested in the Rust suites.
    env = dict(os.environ, TABLE_NAME=f"e2e-{os.getpid()}", CORS_ALLOWED_ORIGINS=f"http://127.0.0.1:{frontend_port}",
               CHATS_PER_MINUTE="100", **{k: str(v) for k, v in ports.items()})
    for var in ("GEMINI_API_KEY", "GEMINI_BASE_URL", "AWS_ENDPOINT_URL_DYNAMODB"):
        env.pop(var, None)  # exactly what a newcomer's shell has: no key, no endpoint
    base = f"http://127.0.0.1:{ports['API_PORT']}"
    r = Results()
    failed_install = install_schemathesis()
    r.check("schemathesis installs", failed_install is None, failed_install)
    failed_ws_install = install(WEBSOCKETS_VENV, "websockets", WEBSOCKETS_VERSION)
    r.check("websockets installs", failed_ws_install is None, failed_ws_install)
    failed_browser = browser_test.install()
    r.check("the browser tools install (chromium, chromium-driver, selenium, axe-core)", failed_browser is None,
            failed_browser)
    profile = tempfile.mkdtemp(prefix="e2e-chromium-")  # the browser's, and how its processes are found
    frontends = []
    log = tempfile.NamedTemporaryFile("w+", prefix="e2e-dev-", suffix=".log", delete=False)
    print(f"e2e: starting scripts/dev (log {log.name})")
    # SIGINT as a terminal delivers it: a shell that starts a job in the background (CI, `&`)
    # passes SIGINT down ignored, and a shell can't trap a signal ignored at its start.
    dev = subprocess.Popen(["scripts/dev"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, start_new_session=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    r.log = log.name
    try:
        deadline = time.time() + START_TIMEOUT
        while not (port_open(ports["API_PORT"]) and "The API is up" in open(log.name).read()):
            if dev.poll() is not None or time.time() > deadline:
                print(open(log.name).read()[-3000:])
                r.check("local API starts", False, f"exit={dev.poll()}")
                return r
            time.sleep(0.5)
        r.check("local API starts", True)
        r.check("says loudly that answers are canned", "chat answers are CANNED" in open(log.name).read())

        # The original service's own curl example, unchanged: its 7-character password
        # is below our minimum, and says so.
        status, _, body = call(base, "POST", "/api/register/", {"username": "john", "password": "pass123"})
        r.check("seed curl: short password is a clear 400", status == 400 and body.get("field") == "password", body)

        status, _, body = call(base, "POST", "/api/register/", {"username": "john", "password": "pass1234"})
        r.check("register 201 with the original body", status == 201 and body ==
                {"message": "User registered successfully.", "username": "john", "tokens": 4000}, (status, body))

        status, _, body = call(base, "POST", "/api/login", {"username": "john", "password": "pass1234"})
        token = body.get("token") if isinstance(body, dict) else None
        r.check("login 200 with a token (no trailing slash)", status == 200 and isinstance(token, str), (status, body))

        status, headers, body = call(base, "POST", "/api/chat/", {"message": "Hello, Gemini"}, token=token)
        r.check("chat 200, 100 credits spent", status == 200 and body.get("tokens_remaining") == 3900
                and body.get("message") == "Hello, Gemini" and "canned" in body.get("response", ""), (status, body))
        r.check("chat reports the balance in a header", headers.get("x-tokens-remaining") == "3900", headers)

        status, _, body = call(base, "GET", "/api/tokens/", token=token)
        r.check("tokens 200 shows 3900", status == 200 and body == {"tokens": 3900}, (status, body))

        # Conversations and models, routed to the chat and tokens functions.
        status, _, body = call(base, "POST", "/api/chat/", {"message": "And Spain?"}, token=token)
        body_conversation = body.get("conversation_id") if isinstance(body, dict) else None
        r.check("a second chat continues the conversation", status == 200 and body_conversation is not None, (status, body))
        status, _, body = call(base, "GET", "/api/conversations", token=token)
        conversation = (body.get("conversations") or [{}])[0] if isinstance(body, dict) else {}
        r.check("the conversation is listed with two messages", status == 200 and conversation.get("id") ==
                body_conversation and conversation.get("messages") == 2, (status, body))
        status, _, body = call(base, "GET", f"/api/conversations/{body_conversation}/messages/?limit=1", token=token)
        r.check("its messages page by cursor", status == 200 and len(body.get("messages", [])) == 1
                and body.get("next_cursor"), (status, body))
        # A streamed answer: start, words as the stand-in writes them (paced like Gemini),
        # then done with the whole answer; charged like any other.
        status, events = stream(base, "/api/chat/", {"message": "Tell me a story", "conversation_id": None}, token)
        names = [e[0] for e in events]
        deltas = [e for e in events if e[0] == "delta"]
        done = events[-1][1] if events and events[-1][0] == "done" else {}
        r.check("a streamed chat sends start, deltas and done", status == 200 and names[:1] == ["start"]
                and len(deltas) > 1 and names[-1:] == ["done"], (status, names))
        r.check("its words arrive before the answer is finished",
                bool(deltas) and deltas[0][2] + 0.05 < events[-1][2], [round(e[2], 3) for e in events[:3]])
        r.check("the streamed answer is whole and paid", done.get("response") == "".join(d[1]["text"] for d in deltas)
                and done.get("tokens_remaining") == 3700, done)
        status, _, body = call(base, "GET", "/api/models/")
        r.check("models need no token", status == 200 and any(m.get("default") for m in body.get("models", [])), (status, body))
        status, _, body = call(base, "DELETE", f"/api/conversations/{body_conversation}", token=token)
        r.check("a conversation can be deleted", status == 204, (status, body))
        status, _, body = call(base, "GET", "/api/tokens/", token=token)
        r.check("tokens 200 shows 3700", status == 200 and body == {"tokens": 3700}, (status, body))

        status, _, body = call(base, "POST", "/api/chat/", {"message": "[standin:503]"}, token=token)
        r.check("Gemini overload is 503 and refunded", status == 503, (status, body))
        status, _, body = call(base, "GET", "/api/tokens", token=token)
        r.check("balance unchanged after the failure", body == {"tokens": 3700}, body)
        r.check("scripts/dev prints the WebSocket URL", f"ws://127.0.0.1:{ports['WS_PORT']}/ws" in open(log.name).read())

        # The WebSocket API through the local gateway, with a real WebSocket client.
        if failed_ws_install is None:
            ws = subprocess.run([os.path.join(WEBSOCKETS_VENV, "bin", "python"), os.path.join(ROOT, "scripts", "e2e_ws.py"),
                                 base, token], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
            lines = [json.loads(line) for line in ws.stdout.splitlines() if line.startswith("{")]
            for line in lines:
                r.check(f"websocket: {line['check']}", line["ok"], line["detail"])
            r.check("websocket: every check ran", len(lines) >= 7, ws.stderr[-2000:])

        status, _, body = call(base, "POST", "/api/chat/", {"message": "hi"})
        r.check("chat without a token is 401", status == 401 and body.get("code") == "not_authenticated", body)
        status, _, body = call(base, "GET", "/api/register/")
        r.check("wrong method is 405", status == 405, (status, body))
        status, _, body = call(base, "POST", "/api/chat/", raw=b"{oops", token=token)
        r.check("malformed JSON is 400", status == 400 and body.get("code") == "malformed_json", body)

        status, _, body = call(base, "POST", "/api/register/", raw=b"username=eve&password=pass1234",
                               content_type="application/x-www-form-urlencoded")
        r.check("a form-encoded register is 415", status == 415, (status, body))
        status, _, body = call(base, "GET", "/api/sessions/", token=token)
        r.check("sessions lists the login", status == 200 and len(body.get("sessions", [])) == 1, (status, body))
        status, _, body = call(base, "POST", "/api/logout/", token=token)
        r.check("logout 200", status == 200, (status, body))
        status, _, body = call(base, "GET", "/api/tokens/", token=token)
        r.check("a logged-out token is 401", status == 401 and body.get("code") == "invalid_token", (status, body))

        # The chat page, in a browser; and from two other origins, one listed.
        if failed_browser is None:
            site = browser_test.frontend_dir()
            frontends = [browser_test.serve_frontend(site, frontend_port), browser_test.serve_frontend(site)]
            browser_test.run(r, base, [f.server_address[1] for f in frontends], profile)
            for server in frontends:
                server.shutdown()
                server.server_close()
            shutil.rmtree(site, ignore_errors=True)

        # The contract: openapi.yaml against the running API, every served operation. All
        # users sign in first: the runs' failed logins use up this address's login budget.
        # Operations that end the session or the account get their own user, one session
        # each, in an order where each starts with a live token.
        if failed_install is not None:
            return r
        status, _, body = call(base, "GET", "/api/openapi.json")
        r.check("GET /api/openapi.json serves the contract", status == 200 and body.get("openapi", "").startswith("3.1"),
                status)
        try:
            [user] = signed_in(base, "contract-user")
            [streaming] = signed_in(base, "contract-stream")
            account, session, everywhere = signed_in(base, "contract-ends", sessions=3)
        except RuntimeError as err:
            r.check("contract users sign in", False, err)
            return r
        ending = ["deleteAccount", "logout", "logoutAll"]
        contract(r, base, "every operation, signed in", user, {"exclude": ending}, max_examples=100)
        contract(r, base, "chat streamed as Server-Sent Events", streaming, {"include": ["chat"]}, max_examples=40,
                 headers=["Accept: text/event-stream"])
        contract(r, base, "account deletion", account, {"include": ["deleteAccount"]}, max_examples=30)
        contract(r, base, "logout", session, {"include": ["logout"]}, max_examples=20)
        contract(r, base, "logout everywhere", everywhere, {"include": ["logoutAll"]}, max_examples=20)
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends
            try:
                dev.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(dev.pid, signal.SIGKILL)
                dev.wait()
                r.check("stops on Ctrl-C within 60 s", False)
        time.sleep(1)
        still_open = [name for name, port in ports.items() if port_open(port)]
        r.check("no port left open", not still_open, still_open)
        stray = leftovers([f"127.0.0.1:{p}" for p in ports.values()] + [f"-port {ports['DYNAMODB_PORT']}",
                                                                       f"--invoke-port {ports['API_PORT']}", profile])
        r.check("no process left running", not stray, stray)
        shutil.rmtree(profile, ignore_errors=True)
    return r


if __name__ == "__main__":
    results = main()
    if not results.failed:
        os.remove(results.log)
    print(f"e2e: {results.passed} passed, {results.failed} failed")
    sys.exit(1 if results.failed else 0)
