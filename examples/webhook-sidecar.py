#!/usr/bin/env python3
"""A minimal sidecar for agh-worker's webhook handler (Python 3 standard library only).

Usage:
    AGH_WEBHOOK_SECRET=... python3 examples/webhook-sidecar.py [PORT]

Listens on 127.0.0.1:PORT (default 8787; 0 picks a free port) and prints
"listening on http://127.0.0.1:PORT" as its first stdout line. Point a handler at it:

    [[handlers]]
    name = "sidecar"
    kind = "webhook"
    [handlers.webhook]
    url = "http://127.0.0.1:8787/task"
    messages_url = "/messages"
    secret_file = "webhook.key"   # same key as AGH_WEBHOOK_SECRET

POST /task receives the task document and answers the outcome: it completes the task, fails it
when the title contains "fail", and releases it when the title contains "release".
POST /messages receives the run's inbound channel messages (logged to stderr).
When AGH_WEBHOOK_SECRET is set, every request must carry a valid X-AGH-Worker-Signature.
"""

import hashlib
import hmac
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ.get("AGH_WEBHOOK_SECRET", "").encode()
# The worker may retry a delivery that got no answer; the Idempotency-Key tells a duplicate
# apart, and a duplicate gets the first answer again. (A real sidecar keeps this in its own store
# and forgets keys after a while.)
ANSWERED = {}


def signature_ok(body, header):
    if not SECRET:
        return True
    expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    # Constant-time comparison, so the signature cannot be guessed byte by byte.
    return hmac.compare_digest(expected, header or "")


def decide(task):
    title = task.get("title", "")
    if "fail" in title.lower():
        return {"outcome": "fail", "error": "the title asks for a failure",
                "metadata": {"title": title}}
    if "release" in title.lower():
        return {"outcome": "release", "reason": "not now: the title asks for a release"}
    return {"outcome": "complete",
            "result": {"summary": "handled: " + title, "run_id": task.get("run_id")}}


class Sidecar(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if not signature_ok(body, self.headers.get("X-AGH-Worker-Signature")):
            return self.answer(401, {"error": "bad signature"})
        try:
            document = json.loads(body)
        except ValueError:
            return self.answer(400, {"error": "not JSON"})
        if self.path == "/messages":
            print("message for run %s: %s" % (self.headers.get("X-AGH-Worker-Run-ID"),
                                              document.get("text")), file=sys.stderr)
            return self.answer(200, {"ok": True})
        if self.path != "/task":
            return self.answer(404, {"error": "no such path"})
        key = self.headers.get("Idempotency-Key")
        if key not in ANSWERED:
            ANSWERED[key] = decide(document)
        self.answer(200, ANSWERED[key])

    def answer(self, status, value):
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):
        sys.stderr.write("sidecar: " + (format % args) + "\n")


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8787
    server = ThreadingHTTPServer(("127.0.0.1", port), Sidecar)
    print("listening on http://127.0.0.1:%d" % server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
