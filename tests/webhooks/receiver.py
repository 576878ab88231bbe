#!/usr/bin/env python3
"""A webhook receiver for onair's tests that verifies every request with the
official Standard Webhooks library, the way an application would.

Prints its port on the first line of stdout, then one JSON line per request:
{"path", "verified", "webhook_id", "event", "status"}.

Behaviour per path:
  /ok            answers 204
  /flaky/N       answers 503 (Retry-After: 0) to the first N requests of each webhook-id, then 204
  /busy/N/S      answers 503 (Retry-After: S seconds) to the first N requests of each webhook-id, then 204
  /slow/N/S      reports the first N requests of each webhook-id at once, answers them
                 503 (Retry-After: 0) only after S seconds, then 204
  /gone          answers 410
"""
import json
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRET = sys.argv[1]
webhook = Webhook(SECRET)
attempts = Counter()
# Requests are served on threads; one line at a time on stdout, one count at a time.
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            event = webhook.verify(body, headers)
            verified = True
        except WebhookVerificationError as e:
            event, verified = {"error": str(e)}, False
        message_id = headers.get("webhook-id", "")
        with lock:
            attempts[(self.path, message_id)] += 1
            seen = attempts[(self.path, message_id)]
        if not verified:
            status = 400
        elif self.path == "/gone":
            status = 410
        elif self.path.startswith("/flaky/"):
            failures = int(self.path.rsplit("/", 1)[1])
            status = 503 if seen <= failures else 204
        elif self.path.startswith(("/busy/", "/slow/")):
            failures = self.path.split("/")[2]
            status = 503 if seen <= int(failures) else 204
        else:
            status = 204
        line = json.dumps({
            "path": self.path,
            "verified": verified,
            "webhook_id": message_id,
            "event": event,
            "status": status,
        })
        with lock:
            print(line, flush=True)
        if status == 503 and self.path.startswith("/slow/"):
            time.sleep(float(self.path.split("/")[3]))
        self.send_response(status)
        if status == 503:
            busy = self.path.startswith("/busy/")
            self.send_header("Retry-After", self.path.split("/")[3] if busy else "0")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2]) if len(sys.argv) > 2 else 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
