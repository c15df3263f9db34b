"""The review queue: the SQLite store (validation, one transaction per decision, concurrent
writers), the HTTP endpoints, and the page in a real headless Chromium: approve, edit and
reject with the keyboard, restart the server, the three decisions are there and exported."""

from __future__ import annotations

import json
import os
import random
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from posttrain.core.data import read_jsonl
from posttrain.phases.cot.review_server import make_server
from posttrain.phases.cot.review_store import DECISIONS_FILE, REVIEW_DB, ReviewError, ReviewStore
from tests.posttrain.phases.cot.cdp import CHROMIUM, Browser

ITEMS = [{"id": f"cot-{i}#1", "prompt": f"What is {i} + {i}?", "answer": str(2 * i),
          "completion": f"ones {i}+{i}={2 * i} write {2 * i % 10} carry {2 * i // 10}. The answer is {2 * i}",
          "tier": "B", "borderline": False, "answer_reward": 1.0, "steps_reward": 0.5, "mean_logprob": -0.4,
          "entropy": 0.3} for i in range(1, 6)]


@pytest.fixture
def run_dir(tmp_path):
    ReviewStore(tmp_path / REVIEW_DB).load_queue(ITEMS)
    return tmp_path


def test_store_validates_before_writing(run_dir):
    store = ReviewStore(run_dir / REVIEW_DB)
    for args, msg in [(("nope", "approve"), "no item 'nope'"), ((ITEMS[0]["id"], "accept"), "one of approve"),
                      ((ITEMS[0]["id"], "edit"), "non-empty string"), ((ITEMS[0]["id"], "edit", "x" * 20001), "longer"),
                      ((ITEMS[0]["id"], "approve", "text"), "only an edit"), ((None, "approve"), "'id'")]:
        with pytest.raises(ReviewError, match=msg):
            store.decide(*args)
    assert store.pending() == 5 and store.integrity_ok()
    assert store.load_queue(ITEMS) == 5  # loading again adds nothing


def test_concurrent_and_malformed_requests_cannot_corrupt_the_file(run_dir):
    server = make_server(run_dir, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def post(body: bytes, path="/api/decide") -> int:
        req = urllib.request.Request(base + path, data=body, headers={"Content-Type": "application/json"})
        try:
            return urllib.request.urlopen(req, timeout=30).status
        except urllib.error.HTTPError as e:
            return e.code

    bad = [b"{not json", b"[1, 2]", json.dumps({"id": ITEMS[0]["id"], "decision": "drop"}).encode(),
           json.dumps({"id": ITEMS[0]["id"], "decision": "approve", "extra": 1}).encode(),
           json.dumps({"id": "x", "decision": "approve"}).encode(), b"\xff\xfe", b"{}" + b" " * 100_000]
    assert [post(b) for b in bad] == [400] * len(bad)
    codes: list[int] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(25):
            it = rng.choice(ITEMS)["id"]
            d = rng.choice(["approve", "edit", "reject", "bogus"])
            body = {"id": it, "decision": d, **({"completion": f"edited by {seed}"} if d == "edit" else {})}
            codes.append(post(json.dumps(body).encode()))

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    server.shutdown()
    server.server_close()
    assert set(codes) <= {200, 400} and codes.count(200) > 0
    store = ReviewStore(run_dir / REVIEW_DB)
    assert store.integrity_ok()
    items = store.items()
    assert all(it["decision"] in ("approve", "edit", "reject") for it in items)  # every item was hit
    assert all((it["completion"] is not None) == (it["decision"] == "edit") for it in items)


def _serve(run_dir):
    server = make_server(run_dir, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium; .ci/run does it)")
def test_review_page_in_headless_chromium(run_dir):
    server, url = _serve(run_dir)
    browser = Browser()
    try:
        browser.goto(url)
        browser.wait("document.body.dataset.ready === '1'")
        assert browser.eval("document.body.dataset.current") == ITEMS[0]["id"]
        browser.key("a")  # approve the first, moves to the second
        browser.wait(f"document.body.dataset.current === '{ITEMS[1]['id']}'")
        browser.key("e")  # edit the second: select its text, type a new path, Ctrl+Enter
        browser.wait("!document.getElementById('completion').readOnly")
        browser.eval("document.getElementById('completion').select()")
        browser.insert_text("ones 2+2=4 write 4 carry 0. The answer is 4 (checked)")
        browser.key("Enter", ctrl=True)
        browser.wait(f"document.body.dataset.current === '{ITEMS[2]['id']}'")
        browser.key("r")  # reject the third
        browser.wait("document.body.dataset.decided === '3'")
        browser.key("k")  # back to the rejected one: the page shows its decision
        browser.wait("document.getElementById('decision').textContent === 'reject'")
        if os.environ.get("POSTTRAIN_REVIEW_SCREENSHOT"):
            browser.screenshot(Path(os.environ["POSTTRAIN_REVIEW_SCREENSHOT"]))
        server.shutdown()
        server.server_close()
        server, url = _serve(run_dir)  # a restart: the decisions come from the SQLite file
        browser.goto(url)
        browser.wait("document.body.dataset.ready === '1' && document.body.dataset.decided === '3'")
        assert browser.eval("document.body.dataset.current") == ITEMS[3]["id"]  # the first undecided
        browser.key("x")
        browser.wait("document.getElementById('msg').textContent.startsWith('exported 3')")
    finally:
        browser.close()
        server.shutdown()
        server.server_close()
    exported = {r["id"]: r for _, r in read_jsonl(run_dir / DECISIONS_FILE)}
    assert {k: v["review"] for k, v in exported.items()} == {
        ITEMS[0]["id"]: "approve", ITEMS[1]["id"]: "edit", ITEMS[2]["id"]: "reject"}
    assert exported[ITEMS[1]["id"]]["completion"] == "ones 2+2=4 write 4 carry 0. The answer is 4 (checked)"
    assert exported[ITEMS[1]["id"]]["original_completion"] == ITEMS[1]["completion"]
    assert ReviewStore(run_dir / REVIEW_DB).integrity_ok()
