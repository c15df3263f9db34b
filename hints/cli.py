"""`posttrain hints ...`: probe a model with hints, show a run's scheduler state.

Commands import what they use when they run, so `posttrain --help` stays fast."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Optional

import typer

hints_app = typer.Typer(help="Progressive hints: probe a model, show scheduler state.", no_args_is_help=True)


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def make_probe_generator(model: Path, engine: str):
    """(generator, encode) for the probe: `rollouts.factory.make_generator` (hf or vllm)."""
    from hints.probe import prompt_encoder
    from posttrain.core.config import EngineConfig, RayConfig
    from posttrain.core.models import load_tokenizer
    from rollouts.factory import make_generator

    if not (Path(model) / "config.json").is_file():
        raise FileNotFoundError(f"--model {model}: not a HF model folder (no config.json)")
    generator = make_generator(engine, str(model), EngineConfig(), RayConfig())
    return generator, prompt_encoder(load_tokenizer(str(model)))


def run_probe(model: Path, rows: list[dict[str, Any]], samples: int = 8, max_tokens: int = 32,
              temperature: float = 1.0, seed: int = 0, reward: str = "exact", threshold: float = 1.0,
              template: str | None = None, engine: str = "hf", generator: Any = None,
              encode: Any = None) -> list[dict[str, Any]]:
    """The Table-9 probe: [{"level", "all_wrong", "mean_correct"}] for levels 0-5."""
    from hints.inject import DEFAULT_TEMPLATE, check_template
    from hints.probe import probe_table, reward_judge
    from hints.sources import DatasetHints
    from rewards.config import default_reward
    from rewards.scorer import Scorer
    from rollouts.types import SamplingSpec

    own = generator is None
    if own:
        generator, encode = make_probe_generator(model, engine)
    judge = reward_judge(Scorer.from_config(default_reward(reward)), threshold)
    sampling = SamplingSpec(n=samples, temperature=temperature, max_tokens=max_tokens, seed=seed)
    try:
        table = probe_table(generator, encode, rows, DatasetHints(), sampling, judge,
                            check_template(template or DEFAULT_TEMPLATE))
    finally:
        if own:
            generator.close()
    return [{"level": r["level"], "all_wrong": r["all_wrong"], "mean_correct": r["mean_correct"]} for r in table]


def print_probe_table(table: list[dict[str, Any]], samples: int, n_rows: int, title: str = "") -> None:
    from rich.console import Console
    from rich.table import Table

    from hints.levels import level_label, level_name

    t = Table(title=title or f"hint probe: {n_rows} prompts x {samples} samples")
    for col in ("hint", "kind", f"all {samples} wrong", f"mean correct of {samples}"):
        t.add_column(col, justify="right")
    for r in table:
        t.add_row(level_label(r["level"]), level_name(r["level"]), f"{100 * r['all_wrong']:.2f}%",
                  f"{r['mean_correct']:.2f}")
    Console().print(t)


@hints_app.command("probe")
def probe_cmd(
    model: Path = typer.Option(..., "--model", help="HF model folder."),
    data: Path = typer.Option(..., "--data", help="JSONL rows with answers and 5 hints each."),
    samples: int = typer.Option(8, "--samples", "-G", min=1, help="Responses per prompt and level (G)."),
    output: Optional[Path] = typer.Option(None, "--output", help="Write the table here as JSON."),
    max_rows: Optional[int] = typer.Option(None, "--max-rows", help="Probe only the first N rows."),
    max_tokens: int = typer.Option(32, help="Max new tokens per response."),
    temperature: float = typer.Option(1.0, help="Sampling temperature."),
    seed: int = typer.Option(0, help="Sampling seed."),
    reward: str = typer.Option("exact", help="Registered reward that judges a response."),
    threshold: float = typer.Option(1.0, help="A response is correct when its reward >= this."),
    template: Optional[str] = typer.Option(None, help="Hint template with {question} and {hint}."),
    engine: str = typer.Option("hf", help="hf (in-process transformers) or vllm (Ray actors with vLLM engines)."),
) -> None:
    """Table 9 of Keye-VL 1.5 for MODEL on DATA: all-wrong fraction and mean correct at none, L1..L5."""
    from hints.sources import HintSourceError
    from posttrain.core.data import DatasetError, load_rows

    try:
        rows = load_rows(data)
        rows = rows[:max_rows] if max_rows else rows
        table = run_probe(model, rows, samples, max_tokens, temperature, seed, reward, threshold,
                          template, engine)
    except (DatasetError, HintSourceError, FileNotFoundError, KeyError, ValueError) as e:
        _fail(str(e).strip('"'))
    print_probe_table(table, samples, len(rows))
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(table, indent=2) + "\n")
        typer.echo(f"wrote {output}")


def find_state(run_dir: Path) -> Path:
    from posttrain.core.run_dir import HINTS_STATE_FILE as STATE_FILE

    if run_dir.is_file():
        return run_dir
    candidates = [run_dir / STATE_FILE, *sorted(run_dir.glob(f"**/{STATE_FILE}"), reverse=True)]
    for c in candidates:
        if c.is_file():
            return c
    _fail(f"{run_dir}: no {STATE_FILE} here or below; was the run started with hints.enabled=true?")
    raise AssertionError  # unreachable


@hints_app.command("show")
def show_cmd(
    run_dir: Path = typer.Argument(..., help="Run directory (or a hints_state.json file)."),
    limit: int = typer.Option(20, help="Prompts to list (hinted ones first)."),
) -> None:
    """Print a run's hint scheduler state: levels in use and per-prompt history."""
    from rich.console import Console
    from rich.table import Table

    from hints.scheduler import HintScheduler

    path = find_state(run_dir)
    sched = HintScheduler()
    try:
        sched.load(path)
    except ValueError as e:
        _fail(str(e))
    counts = Counter(s.level for s in sched.prompts.values())
    console = Console()
    console.print(f"{path}: {len(sched.prompts)} prompts; levels in use: "
                  + ", ".join(f"L{k}={counts.get(k, 0)}" for k in range(6)))
    t = Table(title="prompts (hinted first)")
    for col in ("prompt id", "level", "minimal", "attempts", "last (level: correct/total)"):
        t.add_column(col)
    order = sorted(sched.prompts.items(), key=lambda kv: (-kv[1].level, kv[0]))
    for pid, s in order[:limit]:
        last = " ".join(f"{a.level}:{a.correct}/{a.total}" for a in s.history[-5:])
        t.add_row(pid, str(s.level), "-" if s.minimal_level is None else str(s.minimal_level),
                  str(len(s.history)), last)
    console.print(t)
