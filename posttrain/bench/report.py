"""Render docs/benchmarks.md (placeholder; filled in below)."""

from __future__ import annotations

from pathlib import Path


def write_docs(results, docs, img_dir, command=""):
    pass
