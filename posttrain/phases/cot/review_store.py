"""Step 4 of the LongCoT pipeline, storage: the review queue and its decisions in SQLite.

RUN_DIR/review.sqlite holds `items` (the tier-B and borderline-A paths, in queue order)
and `decisions` (one row per decided item: approve, edit with the edited text, reject).
Why it survives crashes and concurrent requests:
- WAL journal mode, `synchronous=FULL`: a decision is on disk when its request returns;
- every decision is one `BEGIN IMMEDIATE` transaction (writers queue on the database lock;
  a reader never sees half a write);
- inputs are validated before any write (the item exists, the decision is one of three,
  an edit carries non-empty text under `MAX_TEXT` characters), and the table's CHECK
  constraints refuse anything else, so a malformed request changes nothing.
A second decision on an item replaces the first (a reviewer may change their mind).
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from posttrain.core.data import write_jsonl

REVIEW_DB, REVIEWED_FILE = "review.sqlite", "4_reviewed.jsonl"
DECISIONS_FILE = "review_decisions.jsonl"  # the page's export: every decided item with its decision
DECISIONS = ("approve", "edit", "reject")
MAX_TEXT = 20_000
SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY, position INTEGER NOT NULL, record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS decisions (
    item_id TEXT PRIMARY KEY REFERENCES items(id),
    decision TEXT NOT NULL CHECK (decision IN ('approve', 'edit', 'reject')),
    completion TEXT CHECK (completion IS NULL OR length(completion) BETWEEN 1 AND 20000),
    decided_at REAL NOT NULL
);
"""


class ReviewError(ValueError):
    """A request the store refuses (unknown item, bad decision, bad text); nothing was written."""


class ReviewStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        with self._conn() as c:
            c.execute("PRAGMA journal_mode=WAL")
            c.executescript(SCHEMA)

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        """A connection per call (one per request thread), closed afterwards; autocommit, explicit BEGINs."""
        c = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            c.execute("PRAGMA synchronous=FULL")
            c.execute("PRAGMA foreign_keys=ON")
            yield c
        finally:
            c.close()

    def load_queue(self, records: list[dict[str, Any]]) -> int:
        """Add items not in the queue yet (a restart keeps the queue and its decisions); returns the size."""
        with self._conn() as c:
            c.execute("BEGIN IMMEDIATE")
            start = c.execute("SELECT COALESCE(MAX(position), -1) + 1 FROM items").fetchone()[0]
            for i, r in enumerate(records):
                c.execute("INSERT OR IGNORE INTO items (id, position, record) VALUES (?, ?, ?)",
                          (r["id"], start + i, json.dumps(r)))
            c.execute("COMMIT")
            return c.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def items(self) -> list[dict[str, Any]]:
        """Every item in queue order: {"id", "record", "decision", "completion"} (None when undecided)."""
        with self._conn() as c:
            rows = c.execute("SELECT i.id, i.record, d.decision, d.completion FROM items i LEFT JOIN decisions d "
                             "ON d.item_id = i.id ORDER BY i.position").fetchall()
        return [{"id": i, "record": json.loads(rec), "decision": dec, "completion": comp}
                for i, rec, dec, comp in rows]

    def decide(self, item_id: Any, decision: Any, completion: Any = None) -> dict[str, Any]:
        """Record one decision in one transaction, after validating every input."""
        if not isinstance(item_id, str) or not item_id:
            raise ReviewError("field 'id' must be a non-empty string")
        if decision not in DECISIONS:
            raise ReviewError(f"field 'decision' must be one of {', '.join(DECISIONS)} (got {decision!r})")
        if decision == "edit":
            if not isinstance(completion, str) or not completion.strip():
                raise ReviewError("an edit needs a non-empty string 'completion'")
            if len(completion) > MAX_TEXT:
                raise ReviewError(f"'completion' is longer than {MAX_TEXT} characters")
        elif completion is not None:
            raise ReviewError(f"only an edit carries a 'completion' (decision {decision!r})")
        with self._conn() as c:
            c.execute("BEGIN IMMEDIATE")
            try:
                if c.execute("SELECT 1 FROM items WHERE id = ?", (item_id,)).fetchone() is None:
                    raise ReviewError(f"no item {item_id!r} in the review queue")
                c.execute("INSERT OR REPLACE INTO decisions (item_id, decision, completion, decided_at) "
                          "VALUES (?, ?, ?, ?)", (item_id, decision, completion, time.time()))
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        return {"id": item_id, "decision": decision, "completion": completion}

    def pending(self) -> int:
        with self._conn() as c:
            return c.execute("SELECT COUNT(*) FROM items i LEFT JOIN decisions d ON d.item_id = i.id "
                             "WHERE d.item_id IS NULL").fetchone()[0]

    def reviewed(self) -> list[dict[str, Any]]:
        """Decided items as records: `review` = the decision, an edit's text replacing the completion."""
        out = []
        for it in self.items():
            if it["decision"] is None:
                continue
            rec = dict(it["record"], review=it["decision"])
            if it["decision"] == "edit":
                rec.update(completion=it["completion"], original_completion=it["record"]["completion"])
            out.append(rec)
        return out

    def export(self, path: str | Path) -> int:
        """Write the decided items to a JSONL file (atomically); returns how many."""
        rows = self.reviewed()
        write_jsonl(path, rows)
        return len(rows)

    def integrity_ok(self) -> bool:
        with self._conn() as c:
            return c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
