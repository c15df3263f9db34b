"""RUN_DIR/report.html of a LongCoT data run: tier counts, the score histogram and
confidence against correctness (one self-contained file, plots as inline PNGs)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from posttrain.core.data import read_jsonl
from posttrain.core.run_dir import atomic_write_text


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def calibration(records: list[dict[str, Any]], bins: int = 5) -> list[tuple[float, float, int]]:
    """(mean confidence, answer accuracy, n) per equal-count bin of mean log-prob.

    >>> calibration([{"mean_logprob": -1.0, "answer_reward": 0.0}, {"mean_logprob": -0.1, "answer_reward": 1.0}], 2)
    [(-1.0, 0.0, 1), (-0.1, 1.0, 1)]
    """
    rs = sorted(records, key=lambda r: r["mean_logprob"])
    out = []
    for b in range(bins):
        chunk = rs[b * len(rs) // bins:(b + 1) * len(rs) // bins]
        if chunk:
            out.append((sum(r["mean_logprob"] for r in chunk) / len(chunk),
                        sum((r["answer_reward"] or 0.0) >= 1.0 for r in chunk) / len(chunk), len(chunk)))
    return out


def write_cot_report(run_dir: Path, counts: dict[str, Any], all_judged: Path, scored: list[dict[str, Any]]) -> Path:
    import matplotlib  # matplotlib: heavy, imported when a report is written

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    judged = [obj for _, obj in read_jsonl(all_judged)] if all_judged.is_file() else []
    imgs = []
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    tiers = counts.get("judge", {})
    axes[0].bar(["A", "B", "C"], [tiers.get(f"tier_{t}", 0) for t in "ABC"], color=["#66bb6a", "#ffa726", "#ef5350"])
    axes[0].set(title="paths per tier", ylabel="paths")
    hist = counts.get("score", {}).get("histogram", {})
    axes[1].bar([str(s) for s in range(1, 6)], [hist.get(str(s), 0) for s in range(1, 6)], color="#42a5f5")
    axes[1].set(title="quality score of kept paths", xlabel="score")
    right = [r["mean_logprob"] for r in judged if (r.get("answer_reward") or 0) >= 1]
    wrong = [r["mean_logprob"] for r in judged if (r.get("answer_reward") or 0) < 1]
    axes[2].hist([right, wrong], bins=20, label=["answer right", "answer wrong"], color=["#66bb6a", "#ef5350"])
    axes[2].set(title="confidence vs correctness", xlabel="mean token log-prob")
    axes[2].legend()
    imgs.append(_png(fig))
    plt.close(fig)
    rows = "".join(f"<tr><td>{c:.3f}</td><td>{a:.1%}</td><td>{n}</td></tr>" for c, a, n in calibration(judged))
    body = (
        "<h1>LongCoT data run</h1>"
        + "".join(f'<img id="plot{i}" src="data:image/png;base64,{b}">' for i, b in enumerate(imgs))
        + "<h2>answer accuracy by confidence (equal-count bins of mean log-prob)</h2>"
        + f"<table><tr><th>mean log-prob</th><th>answer right</th><th>paths</th></tr>{rows}</table>"
        + f"<h2>counts per step</h2><pre>{html.escape(json.dumps(counts, indent=2))}</pre>")
    out = Path(run_dir) / "report.html"
    atomic_write_text(out, "<!doctype html><html><head><meta charset='utf-8'><title>cot report</title><style>"
                           "body{font-family:sans-serif;margin:20px} td,th{padding:2px 10px}</style></head><body>"
                           + body + "</body></html>")
    return out
