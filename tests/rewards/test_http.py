"""The `http` reward against a local server that answers, hangs, errors or talks nonsense."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rewards.scorer import Scorer

pytestmark = pytest.mark.timeout(120)


class Handler(BaseHTTPRequestHandler):
    calls = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        data = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Handler.calls.append(self.path)
        if self.path == "/hang":
            time.sleep(30)
            return
        if self.path == "/500":
            self.send_response(500)
            self.end_headers()
            return
        body = {"/ok": {"rewards": [float(len(c)) for c in data["completions"]]},
                "/null": {"rewards": [1.0] + [None] * (len(data["completions"]) - 1)}}.get(self.path)
        raw = json.dumps(body).encode() if body else b"<html>nope"
        self.send_response(200)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture(scope="module")
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def score(url, comps, **kw):
    spec = {"name": "http", "kwargs": {"url": url, "timeout_s": 1.0, "retries": 1, "backoff_s": 0.1, **kw}}
    with Scorer([spec], workers=1, timeout_s=10, max_failed_fraction=1.0) as scorer:
        return scorer.score(comps, [{}] * len(comps))


def test_ok_and_null(server):
    assert score(server + "/ok", ["ab", "c"]).rewards == [2.0, 1.0]
    b = score(server + "/null", ["ab", "c"])
    assert b.rewards == [1.0, None] and "returned null" in b.errors[1]


@pytest.mark.parametrize("path,reason", [("/hang", "timeout"), ("/500", "HTTP 500"),
                                         ("/bad", "invalid JSON")])
def test_failures_after_bounded_retries(server, path, reason):
    Handler.calls.clear()
    t0 = time.monotonic()
    b = score(server + path, ["a", "b"])
    assert time.monotonic() - t0 < 12
    assert b.rewards == [None, None]
    assert "after 2 attempt(s)" in b.errors[0] and reason in b.errors[0], b.errors[0]
    assert Handler.calls.count(path) == 2


def test_connection_refused():
    b = score("http://127.0.0.1:9", ["a"])
    assert b.rewards == [None] and "Connection refused" in b.errors[0]
