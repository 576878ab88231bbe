#!/usr/bin/env python3
"""A fake Nextcloud Talk recording server for onair's tests (stdlib only).

It validates the requests of the "Nextcloud server" (here: onair) exactly as
nextcloud-talk-recording's Server.py does, and reports back exactly as its
BackendNotifier.py does, but records nothing: instead of joining the call it
writes a small, well-formed WebM (or Ogg, for audio-only) file and uploads it
when the recording is stopped.

    fake_recording_server.py --backend http://127.0.0.1:7800/ --secret S

prints one line, {"port": N}, once it listens on 127.0.0.1:N, and exits when
its standard input closes (so it never outlives the test that started it).

Requests from onair (as in nextcloud-talk-recording):
  GET  /api/v1/welcome
  POST /api/v1/room/<token>       {"type":"start"|"stop", ...}

Control endpoints for the test:
  GET  /control/requests          every request to /api/v1/room/*, with headers,
                                  body and the status answered
  GET  /control/events            every report and upload sent to onair, with the
                                  status onair answered
  POST /control/behaviour         {"start": "ok"|"fail"|"silent"|"reject",
                                   "reject_status": 500, "file_size": 100000}
  POST /control/upload            one upload attempt, with overrides (see
                                  Handler.control_upload); answers its event
"""

import argparse
import hashlib
import hmac
import json
import os
import secrets
import sys
import threading
import urllib.error
import urllib.request
import uuid
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RECORDING_STATUS_AUDIO_AND_VIDEO = 1
RECORDING_STATUS_AUDIO_ONLY = 2
USER_AGENT = "Nextcloud-Talk-Recording/0.2.1"
# The recording server's default "maxmessagesize".
MAXIMUM_MESSAGE_SIZE = 1024

LOCK = threading.Lock()
BACKENDS = {}  # backend URL without trailing "/" -> secret
REQUESTS = []
EVENTS = []
SERVICES = {}
SERVICES_STOPPING = {}
BEHAVIOUR = {"start": "ok", "reject_status": 500, "file_size": 100_000}


class HttpError(Exception):
    def __init__(self, status):
        super().__init__(status)
        self.status = status


def backend_secret(backend):
    """Config.getBackendSecret: backends are looked up by URL without trailing "/"."""
    return BACKENDS.get(backend.rstrip("/"))


def calculate_checksum(secret, random, body):
    """Server._calculateChecksum / BackendNotifier.getRandomAndChecksum."""
    return hmac.new(secret.encode(), random.encode() + body, hashlib.sha256).hexdigest()


# --- the recording server's API ----------------------------------------------


def validate_request(headers, read_body):
    """Server._validateRequest, line by line."""
    if "Talk-Recording-Backend" not in headers:
        raise HttpError(403)
    backend = headers["Talk-Recording-Backend"]
    secret = backend_secret(backend)
    if not secret:
        raise HttpError(403)
    if "Talk-Recording-Random" not in headers:
        raise HttpError(403)
    random = headers["Talk-Recording-Random"]
    if "Talk-Recording-Checksum" not in headers:
        raise HttpError(403)
    checksum = headers["Talk-Recording-Checksum"]
    content_length = int(headers.get("Content-Length") or 0)
    if not content_length or content_length > MAXIMUM_MESSAGE_SIZE:
        raise HttpError(400)
    body = read_body(content_length)
    expected = calculate_checksum(secret, random, body)
    # compare_digest on the strings: the checksum must be lowercase hex.
    if not hmac.compare_digest(checksum, expected):
        raise HttpError(403)
    try:
        return backend, json.loads(body)
    except ValueError:
        # Flask answers an unhandled exception with 500.
        raise HttpError(500)


def start_recording(backend, token, data):
    """Server.startRecording."""
    service_id = f"{backend}-{token}"
    if "start" not in data:
        raise HttpError(400)
    if "owner" not in data["start"]:
        raise HttpError(400)
    if "actor" not in data["start"]:
        raise HttpError(400)
    if "type" not in data["start"]["actor"]:
        raise HttpError(400)
    if "id" not in data["start"]["actor"]:
        raise HttpError(400)
    status = RECORDING_STATUS_AUDIO_AND_VIDEO
    if "status" in data["start"]:
        status = data["start"]["status"]
    owner = data["start"]["owner"]
    actor_type = data["start"]["actor"]["type"]
    actor_id = data["start"]["actor"]["id"]
    with LOCK:
        if service_id in SERVICES:
            return {}
        service = {"backend": backend, "token": token, "status": status,
                   "owner": owner, "started": False, "stopped": False}
        SERVICES[service_id] = service
    threading.Thread(target=run_service, args=[service, actor_type, actor_id], daemon=True).start()
    return {}


def run_service(service, actor_type, actor_id):
    """Service.start, minus the browser: notify started (or failed)."""
    behaviour = BEHAVIOUR["start"]
    if behaviour == "silent":
        return
    if behaviour == "fail" or service["stopped"]:
        with LOCK:
            SERVICES.pop(f"{service['backend']}-{service['token']}", None)
        if not service["stopped"]:
            try:
                failed(service["backend"], service["token"])
            except Exception:
                pass
        return
    service["started"] = True
    try:
        started(service["backend"], service["token"], service["status"], actor_type, actor_id)
    except Exception:
        # Service.start: a failed "started" notification fails the recording.
        with LOCK:
            SERVICES.pop(f"{service['backend']}-{service['token']}", None)
        try:
            failed(service["backend"], service["token"])
        except Exception:
            pass


def stop_recording(backend, token, data):
    """Server.stopRecording."""
    service_id = f"{backend}-{token}"
    if "stop" not in data:
        raise HttpError(400)
    actor_type = None
    actor_id = None
    # Works for "stop": [] too, as Nextcloud sends when no participant stopped it.
    if "actor" in data["stop"] and "type" in data["stop"]["actor"] and "id" in data["stop"]["actor"]:
        actor_type = data["stop"]["actor"]["type"]
        actor_id = data["stop"]["actor"]["id"]
    with LOCK:
        if service_id not in SERVICES and service_id in SERVICES_STOPPING:
            return {}
        if service_id not in SERVICES:
            raise HttpError(404)
        service = SERVICES.pop(service_id)
        SERVICES_STOPPING[service_id] = service
    threading.Thread(target=stop_service, args=[service, actor_type, actor_id], daemon=True).start()
    return {}


def stop_service(service, actor_type, actor_id):
    """Service.stop: notify stopped, then upload the recording (if it started)."""
    service_id = f"{service['backend']}-{service['token']}"
    service["stopped"] = True
    try:
        stopped(service["backend"], service["token"], actor_type, actor_id)
        if service["started"]:
            audio = service["status"] == RECORDING_STATUS_AUDIO_ONLY
            extension = ".ogg" if audio else ".webm"
            name = f'Recording {datetime.now().strftime("%Y-%m-%d %H-%M-%S")}{extension}'
            content = recording_content("ogg" if audio else "webm", BEHAVIOUR["file_size"])
            upload_recording(service["backend"], service["token"], name, content, service["owner"])
    except Exception:
        pass
    finally:
        with LOCK:
            SERVICES_STOPPING.pop(service_id, None)


# --- BackendNotifier ---------------------------------------------------------


def send(kind, token, request, retries):
    """One request as BackendNotifier.doRequest sends it: any failure (an HTTP
    error status too) is retried. Returns the last attempt's event."""
    while True:
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                event = record_event(kind, token, response.status, response.read(), response.headers)
        except urllib.error.HTTPError as error:
            event = record_event(kind, token, error.code, error.read(), error.headers)
        except Exception as error:  # connection refused, timeout...
            event = record_event(kind, token, None, str(error).encode(), {})
        retries -= 1
        if event["ok"] or retries < 1:
            return event


def do_request(kind, token, request, retries=3):
    """BackendNotifier.doRequest: raises once the retries are exhausted."""
    event = send(kind, token, request, retries)
    if not event["ok"]:
        raise HttpError(event["status"])


def record_event(kind, token, status, body, headers):
    event = {"kind": kind, "token": token, "status": status,
             "ok": status is not None and 200 <= status < 300,
             "body": body.decode("utf-8", "replace"),
             "content_type": headers.get("Content-Type", "")}
    with LOCK:
        EVENTS.append(event)
    return event


def backend_request(backend, token, data):
    """BackendNotifier.backendRequest."""
    url = backend.rstrip("/") + "/ocs/v2.php/apps/spreed/api/v1/recording/backend"
    body = json.dumps(data).encode()
    random = secrets.token_urlsafe(64)
    checksum = calculate_checksum(backend_secret(backend), random, body)
    headers = {
        "Content-Type": "application/json",
        "OCS-ApiRequest": "true",
        "Talk-Recording-Random": random,
        "Talk-Recording-Checksum": checksum,
        "User-Agent": USER_AGENT,
    }
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    do_request(data["type"], token, request)


def started(backend, token, status, actor_type, actor_id):
    backend_request(backend, token, {
        "type": "started",
        "started": {"token": token, "status": status,
                    "actor": {"type": actor_type, "id": actor_id}},
    })


def stopped(backend, token, actor_type, actor_id):
    data = {"type": "stopped", "stopped": {"token": token}}
    if actor_type is not None and actor_id is not None:
        data["stopped"]["actor"] = {"type": actor_type, "id": actor_id}
    backend_request(backend, token, data)


def failed(backend, token):
    backend_request(backend, token, {"type": "failed", "failed": {"token": token}})


def multipart(fields):
    """What requests_toolbelt's MultipartEncoder sends: plain values become
    fields, (name, bytes) tuples become files."""
    boundary = uuid.uuid4().hex
    body = b""
    for name, value in fields:
        body += f"--{boundary}\r\n".encode()
        if isinstance(value, tuple):
            filename, content = value
            body += f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n\r\n'.encode()
            body += content
        else:
            body += f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            body += value.encode()
        body += b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", body


def upload_once(backend, token, fields, random=None, checksum=None, checksum_data=None):
    """BackendNotifier.uploadRecording: the checksum is over the token."""
    url = backend.rstrip("/") + "/ocs/v2.php/apps/spreed/api/v1/recording/" + token + "/store"
    content_type, body = multipart(fields)
    random = random if random is not None else secrets.token_urlsafe(64)
    if checksum is None:
        data = (checksum_data if checksum_data is not None else token).encode()
        checksum = calculate_checksum(backend_secret(backend), random, data)
    headers = {
        "Content-Type": content_type,
        "OCS-ApiRequest": "true",
        "Talk-Recording-Random": random,
        "Talk-Recording-Checksum": checksum,
        "User-Agent": USER_AGENT,
        "Accept": "application/json",
    }
    return urllib.request.Request(url, data=body, headers=headers, method="POST")


def upload_recording(backend, token, name, content, owner):
    request = upload_once(backend, token, [("owner", owner), ("file", (name, content))])
    do_request("upload", token, request)


def recording_content(kind, size):
    """A file that a media type sniffer recognises, padded to `size` bytes."""
    if kind == "webm":
        # EBML header with DocType "webm".
        head = bytes([0x1A, 0x45, 0xDF, 0xA3, 0x9F, 0x42, 0x86, 0x81, 0x01, 0x42, 0xF7, 0x81,
                      0x01, 0x42, 0xF2, 0x81, 0x04, 0x42, 0xF3, 0x81, 0x08, 0x42, 0x82, 0x84])
        head += b"webm"
    elif kind == "ogg":
        head = b"OggS\x00\x02" + bytes(20) + b"\x01\x13OpusHead\x01\x01"
    elif kind == "text":
        head = b"this is not a recording\n"
    elif kind == "empty":
        return b""
    else:
        raise ValueError(kind)
    # Deterministic padding, so the test can check the stored bytes.
    pad = bytes(i % 251 for i in range(max(0, size - len(head))))
    return head + pad


# --- HTTP --------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # quiet
        pass

    def answer(self, status, payload):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def read_json(self):
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def do_GET(self):
        if self.path == "/api/v1/welcome":
            return self.answer(200, {"version": "0.2.1"})
        if self.path == "/control/requests":
            with LOCK:
                return self.answer(200, {"requests": list(REQUESTS)})
        if self.path == "/control/events":
            with LOCK:
                return self.answer(200, {"events": list(EVENTS)})
        return self.answer(404, {})

    def do_POST(self):
        if self.path.startswith("/api/v1/room/"):
            return self.room(self.path[len("/api/v1/room/"):])
        if self.path == "/control/behaviour":
            BEHAVIOUR.update(self.read_json())
            return self.answer(200, BEHAVIOUR)
        if self.path == "/control/upload":
            return self.control_upload(self.read_json())
        return self.answer(404, {})

    def room(self, token):
        """Server.handleBackendRequest, recording what it was asked."""
        record = {"path": self.path,
                  "headers": {k.lower(): v for k, v in self.headers.items()}, "body": None}
        body_read = []

        def read_body(length):
            body_read.append(self.rfile.read(length))
            return body_read[0]

        try:
            backend, data = validate_request(self.headers, read_body)
            if "type" not in data:
                raise HttpError(400)
            if data["type"] == "start" and BEHAVIOUR["start"] == "reject":
                # The recording server fails (e.g. misconfigured behind a proxy).
                raise HttpError(int(BEHAVIOUR["reject_status"]))
            if data["type"] == "start":
                status, payload = 200, start_recording(backend, token, data)
            elif data["type"] == "stop":
                status, payload = 200, stop_recording(backend, token, data)
            else:
                raise HttpError(400)
        except HttpError as error:
            status, payload = error.status, {}
        if not body_read:
            # Drain what was not read, so the connection stays usable.
            length = int(self.headers.get("Content-Length") or 0)
            body_read.append(self.rfile.read(length))
        record["body"] = body_read[0].decode("utf-8", "replace")
        record["status"] = status
        with LOCK:
            REQUESTS.append(record)
        self.answer(status, payload)

    def control_upload(self, spec):
        """One upload attempt with the test's overrides:
        {"token", "owner" (null to leave out), "name", "content": webm|ogg|text|empty,
         "size", "omit_file", "random", "checksum", "checksum_data"}"""
        backend = spec.get("backend") or next(iter(BACKENDS))
        token = spec["token"]
        fields = []
        if spec.get("owner") is not None:
            fields.append(("owner", spec["owner"]))
        if not spec.get("omit_file"):
            content = recording_content(spec.get("content", "webm"), spec.get("size", 1000))
            fields.append(("file", (spec.get("name", "Recording 2025-06-03 14-05-02.webm"), content)))
        request = upload_once(backend, token, fields, spec.get("random"), spec.get("checksum"),
                              spec.get("checksum_data"))
        self.answer(200, send("upload", token, request, retries=1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", action="append", required=True,
                        help="URL of an allowed backend (onair)")
    parser.add_argument("--secret", required=True, help="secret shared with the backends")
    args = parser.parse_args()
    for backend in args.backend:
        BACKENDS[backend.rstrip("/")] = args.secret
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True

    def watch_stdin():
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=watch_stdin, daemon=True).start()
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
