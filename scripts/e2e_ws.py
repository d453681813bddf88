#!/usr/bin/env python3
"""The WebSocket part of scripts/e2e.py, run by it with the Python of a virtualenv that
has `websockets` (a real WebSocket client library): chat, cancel and balance pushes
against the local API that scripts/dev started.

    e2e_ws.py BASE_URL TOKEN

Prints one JSON line per check: {"check", "ok", "detail"}."""

import json
import sys
import time
import urllib.error
import urllib.request

from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

WAIT = 60


def report(name, ok, detail=""):
    print(json.dumps({"check": name, "ok": bool(ok), "detail": str(detail)[:500]}), flush=True)


def ticket(base, token):
    req = urllib.request.Request(base + "/api/ws-ticket/", data=b"", method="POST")
    req.add_header("Authorization", f"Token {token}")
    with urllib.request.urlopen(req, timeout=WAIT) as resp:
        return json.loads(resp.read())


def opened(base, token):
    t = ticket(base, token)
    return connect(f"{t['url']}?ticket={t['ticket']}", open_timeout=WAIT), t


def frames_until(ws, kind, timeout=WAIT):
    """Frames up to and including the first of type `kind`."""
    frames, deadline = [], time.monotonic() + timeout
    while True:
        frame = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        frames.append(frame)
        if frame.get("type") == kind:
            return frames


def main():
    base, token = sys.argv[1], sys.argv[2]
    tab, first = opened(base, token)
    phone, _ = opened(base, token)
    report("the ticket route gives a ticket and the WebSocket URL",
           len(first["ticket"]) == 64 and first["url"].startswith("ws://") and first["expires_in"] == 60, first)
    try:
        connect(f"{first['url']}?ticket={first['ticket']}", open_timeout=WAIT).close()
        report("a used ticket is refused", False, "it was accepted")
    except InvalidStatus as err:
        report("a used ticket is refused", err.response.status_code == 401, err.response.status_code)

    # A chat: start, coalesced deltas, done; the other screen's balance moves.
    tab.send(json.dumps({"action": "chat", "message": "Tell me a story [standin:long=200]",
                         "request_id": "e2e-ws-1", "conversation_id": None}))
    frames = frames_until(tab, "done")
    kinds = [f["type"] for f in frames if f["type"] != "balance"]
    deltas = [f for f in frames if f["type"] == "delta"]
    done = frames[-1]
    report("a WebSocket chat sends start, deltas and done",
           kinds[:1] == ["start"] and len(deltas) > 1 and kinds[-1] == "done"
           and all(f.get("request_id") == "e2e-ws-1" for f in frames if f["type"] != "balance"), kinds[:5])
    report("its answer is whole and paid", done.get("response") == "".join(d["text"] for d in deltas)
           and done.get("finish_reason") == "STOP", {k: done.get(k) for k in ("tokens_remaining", "finish_reason")})
    pushed = json.loads(phone.recv(timeout=WAIT))
    report("the other screen's balance moves", pushed == {"type": "balance", "tokens": done.get("tokens_remaining")},
           pushed)

    # Stop: Gemini is stopped, the words so far are kept and charged once.
    tab.send(json.dumps({"action": "chat", "message": "A long one [standin:long=1000]",
                         "request_id": "e2e-ws-stop", "conversation_id": None}))
    frames = frames_until(tab, "delta")
    sent = time.monotonic()
    tab.send(json.dumps({"action": "cancel", "request_id": "e2e-ws-stop"}))
    frames += frames_until(tab, "done")
    took = time.monotonic() - sent
    stopped = frames[-1]
    given = "".join(f["text"] for f in frames if f["type"] == "delta")
    report("cancel stops the answer where it got", stopped.get("finish_reason") == "CANCELLED"
           and stopped.get("response") == given and len(given.split()) < 1000 and took < 5,
           {"seconds": round(took, 2), "words": len(given.split())})

    tab.send(json.dumps({"action": "dance"}))
    frame = frames_until(tab, "error")[-1]
    report("an unknown action is an error frame", frame.get("code") == "unknown_action", frame)
    tab.send(json.dumps({"action": "balance"}))
    frame = frames_until(tab, "balance")[-1]
    report("the connection stays open and tells the balance", frame.get("tokens") == stopped.get("tokens_remaining"),
           frame)
    tab.close()
    phone.close()


if __name__ == "__main__":
    try:
        main()
    except Exception as err:  # every failure is a failed check, never a crash of e2e
        report("the WebSocket session runs to its end", False, repr(err))
