"""Step 4 of the LongCoT pipeline, the page: `posttrain data review RUN_DIR`.

A local web page (stdlib `ThreadingHTTPServer`, no framework: one page and three JSON
endpoints) over the review queue in RUN_DIR/review.sqlite (review_store.py):

    GET  /             the page: one sample at a time, its prompt, reference answer, tier,
                       judge rewards and confidence; keys a approve, e edit (Ctrl+Enter
                       saves, Esc cancels), r reject, j / k next / previous
    GET  /api/items    the queue with its decisions
    POST /api/decide   {"id", "decision": approve|edit|reject, "completion"?: edited text}
    POST /api/export   writes RUN_DIR/review_decisions.jsonl; returns {"path", "count"}

A malformed request (not JSON, wrong fields, too large, unknown item) is a 400 with a
one-line error and writes nothing; the store runs each decision in one transaction.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from posttrain.phases.cot.review_page import PAGE
from posttrain.phases.cot.review_store import MAX_TEXT, DECISIONS_FILE, REVIEW_DB, ReviewError, ReviewStore

MAX_BODY = 4 * MAX_TEXT + 1024


def make_handler(store: ReviewStore, run_dir: Path) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: Any) -> None:  # quiet: one line per decision is enough
            pass

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, obj: Any) -> None:
            self._send(code, json.dumps(obj).encode(), "application/json")

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path in ("/", "/index.html"):
                self._send(200, PAGE.encode(), "text/html; charset=utf-8")
            elif self.path == "/api/items":
                self._json(200, {"items": store.items(), "pending": store.pending()})
            else:
                self._json(404, {"error": f"no page {self.path}"})

        def _body(self) -> dict[str, Any]:
            try:
                n = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                raise ReviewError("bad Content-Length") from None
            if n <= 0 or n > MAX_BODY:
                raise ReviewError(f"request body must be 1-{MAX_BODY} bytes of JSON")
            try:
                obj = json.loads(self.rfile.read(n))
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise ReviewError("request body is not valid JSON") from None
            if not isinstance(obj, dict):
                raise ReviewError("request body must be a JSON object")
            return obj

        def do_POST(self) -> None:  # noqa: N802
            try:
                if self.path == "/api/decide":
                    obj = self._body()
                    unknown = set(obj) - {"id", "decision", "completion"}
                    if unknown:
                        raise ReviewError(f"unknown fields {sorted(unknown)}; send id, decision, completion")
                    res = store.decide(obj.get("id"), obj.get("decision"), obj.get("completion"))
                    print(f"[review] {res['id']}: {res['decision']}", file=sys.stderr, flush=True)
                    self._json(200, {**res, "pending": store.pending()})
                elif self.path == "/api/export":
                    path = run_dir / DECISIONS_FILE
                    self._json(200, {"path": str(path), "count": store.export(path)})
                else:
                    self._json(404, {"error": f"no endpoint {self.path}"})
            except ReviewError as e:
                self._json(400, {"error": str(e)})

    return Handler


def make_server(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    run_dir = Path(run_dir)
    db = run_dir / REVIEW_DB
    if not db.is_file():
        raise FileNotFoundError(f"{run_dir}: no {REVIEW_DB}; run `posttrain data cot` (without --auto) there first")
    server = ThreadingHTTPServer((host, port), make_handler(ReviewStore(db), run_dir))
    server.daemon_threads = True
    return server
