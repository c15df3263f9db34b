"""The run report: RUN_DIR/report.html (one self-contained file, plots as base64 PNG)
and TensorBoard event files in RUN_DIR/tensorboard/.

Reads a pipeline run (pipeline_state.json + each stage's metrics.jsonl) or a single
phase run (metrics.jsonl at the top). Plots: held-out accuracy per stage and step,
RL reward per step, hint-level histogram per RL round, reward components and failure
counts, wall time per stage. Steps are laid end to end across stages ("global step").
A metric logged twice for one step (a stage resumed from a checkpoint) keeps the last value.
`posttrain report RUN_DIR` regenerates both from the files alone.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from posttrain.core.run_dir import atomic_write_text


@dataclass
class StageMetrics:
    name: str
    kind: str
    wall_s: float | None
    status: str
    summary: dict[str, Any]
    series: dict[str, dict[int, float]] = field(default_factory=dict)  # key -> {step: value}
    offset: int = 0  # global step of this stage's step 0
    accuracy: float | None = None  # the pipeline summary's figure (a filter stage carries its model's)
    dtype: dict[str, str] = field(default_factory=dict)  # {trainer, engine}: the dtypes the stage computed in

    def dtype_text(self) -> str:
        """'trainer bfloat16, engine bfloat16' (from the pipeline summary, or a GSPO run's own keys)."""
        d = self.dtype or {r: self.summary[f"{r}/dtype"] for r in ("trainer", "engine") if f"{r}/dtype" in self.summary}
        return ", ".join(f"{role} {v}" for role, v in d.items())

    @property
    def steps(self) -> int:
        return max((s for ser in self.series.values() for s in ser), default=0)

    def points(self, key: str) -> tuple[list[int], list[float]]:
        ser = self.series.get(key, {})
        xs = sorted(ser)
        return [x + self.offset for x in xs], [ser[x] for x in xs]


def read_series(path: Path) -> dict[str, dict[int, float]]:
    series: dict[str, dict[int, float]] = {}
    if not path.is_file():
        return series
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a torn last line after a kill
            continue
        step = rec.get("step")
        if not isinstance(step, int):
            continue
        for k, v in rec.items():
            if k not in ("phase", "step", "time") and isinstance(v, (int, float)) and not isinstance(v, bool):
                series.setdefault(k, {})[step] = float(v)
    return series


def collect(run_dir: str | Path) -> list[StageMetrics]:
    run_dir = Path(run_dir)
    state_path = run_dir / "pipeline_state.json"
    if state_path.is_file():
        stages = []
        for name, rec in json.loads(state_path.read_text()).get("stages", {}).items():
            d = Path(rec.get("dir", run_dir / name))
            d = d if d.is_dir() else run_dir / name
            stages.append(StageMetrics(name, rec.get("kind", "?"), rec.get("wall_s"), rec.get("status", "?"),
                                       rec.get("summary", {}), read_series(d / "metrics.jsonl")))
    else:  # a single phase's run directory
        summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
        series = read_series(run_dir / "metrics.jsonl")
        wall = summary.get("wall_seconds", summary.get("rl_wall_s"))
        stages = [StageMetrics(run_dir.name, summary.get("phase", "rl"), wall, "done", summary, series)]
    summary_path = run_dir / "summary.json"
    listed = json.loads(summary_path.read_text()).get("stages") if summary_path.is_file() else None
    if isinstance(listed, list):
        by_name = {s.get("name"): s for s in listed if isinstance(s, dict)}
        for st in stages:
            st.accuracy = by_name.get(st.name, {}).get("accuracy")
            st.dtype = by_name.get(st.name, {}).get("dtype") or {}
    offset = 0
    for st in stages:
        st.offset = offset
        offset += st.steps
    return stages


# ---------------------------------------------------------------------------- plots


def _fig_png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _boundaries(ax, stages: list[StageMetrics]) -> None:
    for st in stages:
        ax.axvline(st.offset, color="0.8", lw=0.8, zorder=0)
        ax.text(st.offset, 1.0, f" {st.name}", transform=ax.get_xaxis_transform(), va="top", fontsize=7,
                color="0.4")


def plot_accuracy(stages: list[StageMetrics]):
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [2.2, 1]})
    for st in stages:
        xs, ys = st.points("eval/accuracy")
        if xs:
            ax.plot(xs, ys, marker="o", ms=3, label=st.name)
    _boundaries(ax, stages)
    ax.set(xlabel="global step (stages end to end)", ylabel="held-out greedy accuracy", ylim=(0, 1.05),
           title="held-out accuracy per stage and step")
    ax.legend(fontsize=7, loc="lower right")
    names = [st.name for st in stages]
    accs = [final_accuracy(st) for st in stages]
    bx.bar(names, [a or 0.0 for a in accs], color="tab:green")
    for i, a in enumerate(accs):
        bx.text(i, (a or 0.0) + 0.02, "n/a" if a is None else f"{a:.0%}", ha="center", fontsize=8)
    bx.set(ylim=(0, 1.1), title="after each stage")
    bx.tick_params(axis="x", labelrotation=30, labelsize=8)
    return fig


def plot_reward(stages: list[StageMetrics]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 3.2))
    for st in stages:
        xs, ys = st.points("reward/mean")
        if xs:
            ax.plot(xs, ys, lw=1.2, label=f"{st.name} reward/mean")
        for key in ("rft/sample_accuracy", "filter/mean_accuracy"):
            xs, ys = st.points(key)
            if xs:
                ax.scatter(xs, ys, marker="s", label=f"{st.name} {key}")
    _boundaries(ax, stages)
    ax.set(xlabel="global step", ylabel="mean reward / sample accuracy", title="training reward per step")
    ax.legend(fontsize=7)
    return fig


def hint_histograms(stages: list[StageMetrics]) -> dict[str, dict[int, float]]:
    """RL stage -> {hint level: prompt-steps at that level} (level 0 = no hint)."""
    out = {}
    for st in stages:
        levels = {int(m.group(1)): sum(ser.values()) for k, ser in st.series.items()
                  if (m := re.fullmatch(r"hints/level_(\d+)", k))}
        if levels:
            out[st.name] = dict(sorted(levels.items()))
    return out


def plot_hints(stages: list[StageMetrics]):
    import matplotlib.pyplot as plt

    hist = hint_histograms(stages)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / max(len(hist), 1)
    for i, (name, levels) in enumerate(hist.items()):
        ax.bar([lv + i * width for lv in levels], list(levels.values()), width=width, label=name)
    ax.set(xlabel="hint level (0 = none, 5 = full solution)", ylabel="prompt-steps (log)",
           title="hint levels used per RL round")
    if hist:
        ax.set_yscale("symlog")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no RL stage logged hint levels", ha="center", transform=ax.transAxes)
    return fig


def component_keys(st: StageMetrics) -> list[str]:
    return sorted(k for k in st.series if re.fullmatch(r"reward/[^/]+/mean", k))


def failure_counts(stages: list[StageMetrics]) -> dict[str, dict[str, float]]:
    """stage -> {"reward/NAME/failed" or ".../timeouts": total over steps} (+ eval/failed, bad steps)."""
    out = {}
    for st in stages:
        c = {k: sum(ser.values()) for k, ser in st.series.items()
             if re.fullmatch(r"reward/[^/]+/(failed|timeouts)|eval/failed|rl/bad_step", k)}
        if c:
            out[st.name] = c
    return out


def plot_components(stages: list[StageMetrics]):
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 3.2), gridspec_kw={"width_ratios": [2, 1]})
    for st in stages:
        for key in component_keys(st):
            xs, ys = st.points(key)
            ax.plot(xs, ys, lw=1, label=f"{st.name} {key}")
    _boundaries(ax, stages)
    ax.set(xlabel="global step", ylabel="component mean", title="reward components")
    if any(component_keys(st) for st in stages):
        ax.legend(fontsize=7)
    fails = failure_counts(stages)
    labels = [f"{s}\n{k.split('/', 1)[1]}" for s, c in fails.items() for k in c]
    values = [v for c in fails.values() for v in c.values()]
    bx.bar(range(len(values)), values, color="tab:red")
    bx.set_xticks(range(len(values)), labels, fontsize=6, rotation=30)
    bx.set(title=f"failures (total {sum(values):.0f})", ylabel="count")
    return fig


def plot_wall(stages: list[StageMetrics]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 2.8))
    walls = [st.wall_s or 0.0 for st in stages]
    ax.barh([st.name for st in stages][::-1], walls[::-1], color="tab:blue")
    for i, w in enumerate(walls[::-1]):
        ax.text(w, i, f" {w:.0f} s", va="center", fontsize=8)
    ax.set(xlabel="seconds", title=f"wall time per stage (total {sum(walls):.0f} s)")
    return fig


PLOTS = {"accuracy": plot_accuracy, "reward": plot_reward, "hints": plot_hints, "components": plot_components,
         "wall": plot_wall}


def final_accuracy(st: StageMetrics) -> float | None:
    if st.accuracy is not None:
        return float(st.accuracy)
    for key in ("accuracy_after_rl", "eval/accuracy"):
        if st.summary.get(key) is not None:
            return float(st.summary[key])
    _, ys = st.points("eval/accuracy")
    return ys[-1] if ys else None


# ---------------------------------------------------------------------------- outputs


def render_html(run_dir: Path, stages: list[StageMetrics], images: dict[str, str]) -> str:
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(st.name)}</td><td>{esc(st.kind)}</td><td>{esc(st.status)}</td><td>{st.steps}</td>"
        f"<td>{'n/a' if (a := final_accuracy(st)) is None else f'{a:.1%}'}</td>"
        f"<td>{'' if st.wall_s is None else f'{st.wall_s:.0f}'}</td><td>{esc(st.dtype_text())}</td></tr>"
        for st in stages)
    figs = "".join(f'<figure><img id="plot-{k}" alt="{k}" src="data:image/png;base64,{v}"></figure>'
                   for k, v in images.items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>posttrain report: {esc(run_dir.name)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child{{text-align:left}}
img{{max-width:100%}}figure{{margin:1em 0}}</style></head>
<body><h1>posttrain report</h1><p>{esc(str(run_dir))}</p>
<table id="stages"><tr><th>stage</th><th>kind</th><th>status</th><th>steps</th><th>held-out accuracy</th>
<th>wall s</th><th>dtype</th></tr>{rows}</table>
{figs}
</body></html>
"""


def write_tensorboard(run_dir: Path, stages: list[StageMetrics]) -> Path:
    out = run_dir / "tensorboard"
    shutil.rmtree(out, ignore_errors=True)  # regenerating must not duplicate events
    writer = SummaryWriter(str(out))
    try:
        for i, st in enumerate(stages):
            for key in st.series:
                for x, y in zip(*st.points(key)):
                    writer.add_scalar(f"{st.name}/{key}", y, x)
            acc = final_accuracy(st)
            if acc is not None:
                writer.add_scalar("pipeline/accuracy_after_stage", acc, i)
            if st.wall_s is not None:
                writer.add_scalar("pipeline/wall_s", st.wall_s, i)
    finally:
        writer.close()
    return out


def write_report(run_dir: str | Path, tensorboard: bool = True) -> Path:
    """Write RUN_DIR/report.html (and RUN_DIR/tensorboard/); returns the HTML path."""
    import matplotlib

    matplotlib.use("Agg")
    run_dir = Path(run_dir)
    stages = collect(run_dir)
    images = {name: _fig_png(fn(stages)) for name, fn in PLOTS.items()}
    path = run_dir / "report.html"
    atomic_write_text(path, render_html(run_dir, stages, images))
    if tensorboard:
        write_tensorboard(run_dir, stages)
    return path
