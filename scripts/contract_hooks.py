"""Schemathesis hooks for the contract run in scripts/e2e.py.

The local API runs under `cargo lambda watch`, whose router turns each HTTP request into an
API Gateway event before any function sees it. It cannot carry a header value that is not
UTF-8, nor a body that is not UTF-8 when the Content-Type is text or JSON: it answers 500
itself (plain text, from its trigger router) and no function runs. Such a case tests the
emulator, not this service, so it is left out and counted. The functions' own parsers meet
arbitrary bytes in the fuzz target (fuzz/) and the property tests (shared/tests/properties.rs).
"""

import atexit
import sys

import schemathesis

left_out = 0


def _carried(case):
    headers = case.headers or {}
    if any(isinstance(v, str) and not v.isascii() for v in headers.values()):
        return False  # sent as Latin-1 by the client: not UTF-8
    body = case.body
    if isinstance(body, (bytes, bytearray)):
        kind = (case.media_type or "").lower()
        # The router's own test for "text": none, text/*, application/json*.
        if not kind or kind.startswith("text/") or kind.startswith("application/json"):
            try:
                bytes(body).decode("utf-8")
            except UnicodeDecodeError:
                return False
    return True


@schemathesis.hook
def filter_case(context, case):
    global left_out
    if _carried(case):
        return True
    left_out += 1
    return False


@atexit.register
def _report():
    if left_out:
        print(f"(left out {left_out} generated cases the local router cannot carry: "
              "a header or JSON body that is not UTF-8)", file=sys.stderr)
