"""The `posttrain` command line: one verb per phase (read from the phase table,
posttrain/phases/__init__.py), plus tools.

Phase verbs share one shape: `posttrain PHASE --config PATH [key=value ...]
[--run-dir DIR] [--resume RUN_DIR]`. Commands import what they run when they run, so
`posttrain --help` stays fast.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from hints.cli import hints_app
from posttrain.core.stop import EXIT_PREEMPTED
from posttrain.phases import PHASES
from rewards.cli import rewards_app

def error_line(e: BaseException) -> str:
    """One line for an unexpected error; a full disk says so whatever layer noticed it."""
    chain, cur = [], e
    while cur is not None and len(chain) < 10:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    for c in chain:
        if isinstance(c, OSError) and c.errno == errno.ENOSPC:
            return (f"no space left on device (writing {c.filename or 'a file'}); free disk space or choose a "
                    "--run-dir / output on a disk with room")
        if isinstance(c, PermissionError):
            return f"permission denied: {c.filename}; choose a writable location or fix its permissions"
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


class _Group(TyperGroup):
    """Any unexpected exception of a command becomes one line on stderr and exit code 1;
    `posttrain --debug ...` (or POSTTRAIN_DEBUG=1) shows the traceback instead."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (TyperException, typer.Exit, typer.Abort, KeyboardInterrupt):  # usage errors, exits: as they are
            raise
        except Exception as e:
            if DEBUG["on"] or os.environ.get("POSTTRAIN_DEBUG"):
                raise
            typer.secho(f"error: {error_line(e)} (run `posttrain --debug ...` for the traceback)",
                        fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None


DEBUG = {"on": False}
app = typer.Typer(
    cls=_Group, help="posttrain: RL post-training (SFT, MPO, GSPO with hints, RFT, alignment) on Ray + vLLM.",
    no_args_is_help=True, pretty_exceptions_show_locals=False, add_completion=False,
)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors.")) -> None:
    DEBUG["on"] = debug


data_app = typer.Typer(help="Make and convert datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(hints_app, name="hints")
app.add_typer(rewards_app, name="rewards")


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def run_phase(phase: str, config: Optional[Path], overrides: list[str], run_dir: Optional[Path],
              resume: Optional[Path], force: bool = False) -> dict:
    """Load the phase's config (or a run's saved one on resume), run it, return its summary.

    A resume takes the saved config unless --config is given; either way the phase refuses
    a config or dataset that changed since the run started (RunDir.start)."""
    from posttrain.core.config import ConfigError, load_config
    from posttrain.core.data import DatasetError
    from posttrain.core.distributed import is_main, main_first
    from posttrain.core.run_dir import claim_run_dir, default_run_dir

    module = PHASES[phase].load()
    try:
        if resume is not None:
            saved = Path(resume) / "config.yaml"
            if not saved.is_file():
                _fail(f"--resume {resume}: no config.yaml there; is it a {phase} run directory?")
            if run_dir is not None and Path(run_dir).resolve() != Path(resume).resolve():
                _fail(f"--resume {resume} continues the run in place; drop --run-dir {run_dir}")
            cfg = load_config(module.Config, config or saved, overrides)
            run_dir = Path(resume)
        else:
            cfg = load_config(module.Config, config, overrides)
            run_dir = run_dir or default_run_dir(phase)
            with main_first():  # under torchrun rank 0 claims the folder the others then share
                run_dir = claim_run_dir(run_dir, force=force) if is_main() else Path(run_dir)
        summary = module.run(cfg, run_dir, resume=resume is not None)
    except (ConfigError, DatasetError) as e:
        _fail(str(e))
    if not is_main():
        return
    typer.echo(json.dumps(summary, indent=2, default=str))
    if summary.get("preempted"):
        typer.secho(f"{phase} stopped by a signal at step {summary.get('steps')} after a checkpoint (exit code "
                    f"{EXIT_PREEMPTED}, no final/); continue with `posttrain {phase} --resume {run_dir}`",
                    fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(EXIT_PREEMPTED)
    return summary


def _register_phase(name: str, help_text: str) -> None:
    def command(
        overrides: Optional[list[str]] = typer.Argument(None, help="key.sub=value config overrides."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config file."),
        run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Output directory (default runs/<phase>-<time>)."),
        resume: Optional[Path] = typer.Option(None, "--resume", help="Resume the run in this directory."),
        force: bool = typer.Option(False, "--force", help="Replace the run already in --run-dir."),
    ) -> None:
        run_phase(name, config, overrides or [], run_dir, resume, force)

    command.__doc__ = help_text
    app.command(name, help=help_text)(command)


for _phase in PHASES.values():
    _register_phase(_phase.name, _phase.help)


@app.command("make-tiny-model")
def make_tiny_model_cmd(
    data: Path = typer.Option(..., "--data", help="JSONL whose text trains the tokenizer."),
    out: Path = typer.Option(..., "--out", help="Output HF folder."),
    hidden: int = typer.Option(128, help="Hidden size."),
    layers: int = typer.Option(4, help="Transformer layers."),
    heads: int = typer.Option(4, help="Attention heads."),
    head_dim: int = typer.Option(32, help="Head dim; vLLM's CPU attention needs >= 32."),
    vocab_size: int = typer.Option(512, help="Upper bound on the BPE vocabulary."),
    seed: int = typer.Option(0, help="Seed of the initial weights."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out folder."),
    vision: bool = typer.Option(False, "--vision", help="An image-text model (Idefics3 family) and its processor."),
    image_size: int = typer.Option(56, "--image-size", help="With --vision: the side every image is resized to."),
    vision_hidden: int = typer.Option(64, "--vision-hidden", help="With --vision: vision tower hidden size."),
    vision_layers: int = typer.Option(1, "--vision-layers", help="With --vision: vision tower layers."),
) -> None:
    """Build a deterministic tiny Qwen2 model (or, with --vision, an Idefics3 image-text model and
    processor) and a BPE tokenizer trained on DATA."""
    from posttrain.core.data import DatasetError
    from posttrain.core.run_dir import RunDirError, refuse_existing
    from posttrain.tasks.tiny import make_tiny_model
    from posttrain.tasks.tiny_vision import make_tiny_vision_model

    try:
        refuse_existing(out, force, "--out")
        if vision:
            path = make_tiny_vision_model(data, out, hidden=hidden, layers=layers, heads=heads, head_dim=head_dim,
                                          vision_hidden=vision_hidden, vision_layers=vision_layers,
                                          image_size=image_size, vocab_size=vocab_size, seed=seed)
        else:
            path = make_tiny_model(data, out, hidden=hidden, layers=layers, heads=heads,
                                   head_dim=head_dim, vocab_size=vocab_size, seed=seed)
    except (DatasetError, RunDirError, ValueError) as e:
        _fail(str(e))
    typer.echo(str(path))


@data_app.command("make-task")
def make_task_cmd(
    out: Path = typer.Option(..., "--out", help="Output JSONL (training rows)."),
    n: int = typer.Option(1000, "--n", help="Number of rows."),
    digits: int = typer.Option(2, help="Max digits per term."),
    terms: int = typer.Option(2, help="Number of terms."),
    seed: int = typer.Option(0, help="Seed."),
    eval_out: Optional[Path] = typer.Option(None, "--eval-out", help="Also write a held-out split here."),
    n_eval: int = typer.Option(200, "--n-eval", help="Held-out rows (with --eval-out)."),
    force: bool = typer.Option(False, "--force", help="Replace existing output files."),
    kind: str = typer.Option("addition", "--kind", help="addition, or a visual task: visual-quadrants, visual-count, "
                             "visual-add, visual-video, visual-video-quadrants, visual-video-visits "
                             "(PNG media next to --out)."),
    difficulty: int = typer.Option(2, help="Visual tasks: 1 (easiest) to 5."),
    image_size: int = typer.Option(56, "--image-size", help="Visual tasks: image side in pixels."),
) -> None:
    """Write an offline task (rows with answers and five hint levels): addition, or images / video."""
    from posttrain.core.data import write_jsonl
    from posttrain.core.run_dir import RunDirError, refuse_existing
    from posttrain.tasks.addition import make_addition_rows, split_rows
    from posttrain.tasks.visual import write_visual_task

    if n <= 0:
        _fail(f"--n {n}: the number of training rows must be at least 1")
    if eval_out and n_eval <= 0:
        _fail(f"--n-eval {n_eval}: the held-out split needs at least 1 row (or drop --eval-out)")
    if eval_out and Path(eval_out).resolve() == Path(out).resolve():
        _fail(f"--eval-out {eval_out} is the same file as --out; give the held-out split its own file")
    try:
        for path, flag in ((out, "--out"), (eval_out, "--eval-out")):
            if path is not None:
                refuse_existing(path, force, flag)
        if kind != "addition":
            n_train, n_held = write_visual_task(kind, out, n, difficulty, seed, image_size, eval_out, n_eval)
            typer.echo(f"wrote {n_train} {kind} rows to {out}" + (f" and {n_held} to {eval_out}" if eval_out else ""))
            return
        rows = make_addition_rows(n + (n_eval if eval_out else 0), digits=digits, terms=terms, seed=seed)
    except (RunDirError, ValueError) as e:
        _fail(str(e))
    if eval_out:
        train, held = split_rows(rows, n_eval, seed)
        write_jsonl(eval_out, held)
        rows = train
    write_jsonl(out, rows)
    typer.echo(f"wrote {len(rows)} rows to {out}" + (f" and {n_eval} to {eval_out}" if eval_out else ""))


@data_app.command("cot")
def data_cot_cmd(
    overrides: Optional[list[str]] = typer.Argument(None, help="key.sub=value config overrides."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (phase: cot)."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Output directory (default runs/cot-<time>)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue this run (e.g. after the review)."),
    auto: bool = typer.Option(False, "--auto", help="Unattended: keep tier A, drop tier B, no human review."),
) -> None:
    """The 5-step LongCoT data pipeline: collect, k paths with confidence, judge into tiers A/B/C,
    human review (`posttrain data review RUN_DIR`) or --auto, score 1-5 and upsample (docs/data.md)."""
    run_phase("cot", config, [*(overrides or []), *(["review.mode=auto"] if auto else [])], run_dir, resume)


@data_app.command("review")
def data_review_cmd(
    run_dir: Path = typer.Argument(..., help="A `posttrain data cot` run directory (with review.sqlite)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8765, help="Port (0: any free port)."),
) -> None:
    """Serve the review page of RUN_DIR's queue: a approve, e edit, r reject, j/k move, x export."""
    from posttrain.phases.cot.review_server import make_server

    try:
        server = make_server(run_dir, host, port)
    except (FileNotFoundError, OSError) as e:
        _fail(str(e))
    typer.echo(f"review page: http://{host}:{server.server_address[1]}/  (Ctrl+C stops; decisions are saved "
               f"as you make them)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@data_app.command("video-plan")
def video_plan_cmd(
    model: Path = typer.Option(..., "--model", help="Model folder whose processor prices a frame (AutoProcessor)."),
    frames: Optional[Path] = typer.Option(None, "--frames", help="A directory of frame images (name order)."),
    fps: float = typer.Option(1.0, "--fps", help="Frame rate of --frames; with --video, the sample rate."),
    video: Optional[Path] = typer.Option(None, "--video", help="A video file (needs OpenCV)."),
    budget: Optional[int] = typer.Option(
        None, "--budget", help="Total token budget of the clip (rollout.video_token_budget); none: every frame whole."),
    threshold: float = typer.Option(0.95, help="Patch similarity at or above which a frame is fast."),
    fast_ratio: float = typer.Option(0.3, "--fast-ratio", help="A fast frame's share of a slow frame's budget."),
    step: int = typer.Option(28, help="Frame sizes are tried on this grid of longest-edge pixels."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Print what the rollouts send for a clip (core/video.plan_video, the planner of rollouts, SFT rows
    and the bench): each image in prompt order, the frames it shows (slow frames whole, fast frames in
    mosaics on a fixed-size encoder, or resized), its size, tokens and marker, then the prompt text."""
    from transformers import AutoProcessor

    from posttrain.core.media import MediaError, decode_video_file, frames_in_dir, load_video
    from posttrain.core.video import plan_video, processor_token_counter

    if (frames is None) == (video is None):
        _fail("give exactly one of --frames DIR or --video FILE")
    try:
        if video is not None:
            clip, times = decode_video_file(str(video), fps=fps)
            if not clip:
                _fail(f"--video {video}: OpenCV could not decode a frame")
        else:
            clip, times = load_video({"frames": frames_in_dir(frames), "fps": fps})
        processor = AutoProcessor.from_pretrained(str(model))
        tokenizer = getattr(processor, "tokenizer", None)
        text_tokens = (lambda s: len(tokenizer(s, add_special_tokens=False)["input_ids"])) if tokenizer else None
        plan = plan_video(clip, times, processor_token_counter(processor), budget, threshold, fast_ratio, step,
                          text_tokens=text_tokens)
    except (MediaError, ValueError) as e:
        _fail(str(e))
    d = plan.to_dict()
    if as_json:
        typer.echo(json.dumps({**d, "budget": budget}, indent=2))
        return
    for k, im in enumerate(plan.images):
        shown = f"frame {im.frames[0]}" if len(im.frames) == 1 else f"frames {im.frames[0]}-{im.frames[-1]}"
        if im.mosaic:
            shown += f" ({plan.grid}x{plan.grid} mosaic)"
        marker = f"{im.marker} ({text_tokens(im.marker)} tokens)" if text_tokens else im.marker
        typer.echo(f"{k:4d} {im.time_s:8.2f}s {'slow' if im.slow else 'fast'} {shown:<28} {im.height}x{im.width} "
                   f"{im.tokens} tokens  {marker}")
    packed = f", {d['mosaics']} {plan.grid}x{plan.grid} mosaics" if d["mosaics"] else ""
    of = f"of {budget}" if budget is not None else "(no budget: every frame whole)"
    typer.echo(f"{d['slow_frames']} slow + {d['fast_frames']} fast frames in {len(plan.images)} images{packed}: "
               f"{plan.visual_tokens} visual + {plan.marker_tokens} marker tokens = {plan.total_tokens} {of}")
    typer.echo("prompt: " + "".join(im.marker + "<image>" for im in plan.images))


@data_app.command("pairs")
def pairs_cmd(
    input: Path = typer.Option(..., "--input", help="Scored rollouts JSONL (prompt_id, prompt, completion, reward)."),
    output: Path = typer.Option(..., "--output", help="Output pairs JSONL (id, prompt, chosen, rejected)."),
    eval_out: Optional[Path] = typer.Option(None, "--eval-out", help="Also hold out pairs (by prompt) here."),
    n_eval: int = typer.Option(100, "--n-eval", help="Held-out prompts, with all their pairs (with --eval-out)."),
    seed: int = typer.Option(0, help="Seed of the held-out split."),
    per_prompt: int = typer.Option(1, "--per-prompt", min=1,
                                   help="Pairs per prompt: distinct top-reward x bottom-reward texts."),
    reference: bool = typer.Option(False, "--reference", help="Prompts whose samples are all below the file's "
                                   "best reward pair their reference `answer` (chosen) with them."),
    force: bool = typer.Option(False, "--force", help="Replace existing output files."),
) -> None:
    """Turn scored rollouts into preference pairs: a top-reward vs a bottom-reward sample per prompt."""
    from posttrain.core.data import DatasetError, write_jsonl
    from posttrain.core.run_dir import RunDirError, refuse_existing
    from posttrain.phases.pairs import build_pairs
    from posttrain.tasks.addition import split_rows

    same = [p for p in (input, eval_out) if p is not None and Path(p).resolve() == Path(output).resolve()]
    if same or (eval_out and Path(eval_out).resolve() == Path(input).resolve()):
        _fail("--input, --output and --eval-out must be three different files")
    try:
        for path, flag in ((output, "--output"), (eval_out, "--eval-out")):
            if path is not None:
                refuse_existing(path, force, flag)
        pairs, counts = build_pairs(input, per_prompt, reference)
    except (DatasetError, RunDirError) as e:
        _fail(str(e))
    if not pairs:
        _fail(f"{input}: every prompt's samples tie (or have < 2 scored samples); no pairs to write")
    if eval_out:  # held out by prompt: all pairs of a prompt go to one side
        prompt_of = {p["id"]: p.get("prompt_id", p["id"]) for p in pairs}
        prompts = sorted(set(prompt_of.values()))
        if n_eval >= len(prompts):
            _fail(f"--n-eval {n_eval} leaves no training prompts out of {len(prompts)}; lower --n-eval")
        _, held_prompts = split_rows([{"id": q} for q in prompts], n_eval, seed)
        held_ids = {h["id"] for h in held_prompts}
        held = [p for p in pairs if prompt_of[p["id"]] in held_ids]
        pairs = [p for p in pairs if prompt_of[p["id"]] not in held_ids]
        write_jsonl(eval_out, held)
    write_jsonl(output, pairs)
    typer.echo(f"wrote {len(pairs)} pairs to {output}" + (f" and {len(held)} to {eval_out}" if eval_out else "")
               + f" ({counts['prompts']} prompts, {counts['skipped_ties']} skipped as ties)")


@app.command("pipeline")
def pipeline_cmd(
    overrides: Optional[list[str]] = typer.Argument(None, help="key.sub=value overrides of the recipe "
                                                    "(e.g. data.train=F model.init=tiny stages.rl1.values.train.steps=5)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Recipe YAML (default configs/recipes/keye.yaml)."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Output directory (default runs/pipeline-<time>)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the pipeline in this directory."),
    force: bool = typer.Option(False, "--force", help="Rerun stages whose config changed since they ran "
                               "(without --resume: run into a --run-dir that holds a pipeline run)."),
) -> None:
    """A multi-stage recipe (SFT, RL, RFT, filter, MPO, align) from one config; resumable, with a report."""
    from posttrain.core.config import ConfigError
    from posttrain.core.data import DatasetError
    from posttrain.core.run_dir import RunDirError, default_run_dir, writable_dir
    from posttrain.pipeline.config import load_pipeline_config
    from posttrain.pipeline.runner import PipelineInterrupted, print_summary, run_pipeline

    try:
        if resume is not None:
            saved = Path(resume) / "pipeline.yaml"
            if not saved.is_file():
                _fail(f"--resume {resume}: no pipeline.yaml there; is it a pipeline run directory?")
            cfg = load_pipeline_config(config or saved, overrides or [])
            run_dir = Path(resume)
        else:
            cfg = load_pipeline_config(config, overrides or [])
            run_dir = run_dir or default_run_dir("pipeline")
            if Path(run_dir).is_dir() and any(Path(run_dir).iterdir()) and not force:
                raise RunDirError(f"--run-dir {run_dir} is not empty (it holds an earlier run); pass --resume "
                                  f"{run_dir} to continue it (finished stages are skipped), --force to rerun its "
                                  "changed stages, or choose another --run-dir")
        summary = run_pipeline(cfg, writable_dir(run_dir), force=force)
    except (ConfigError, DatasetError) as e:
        _fail(str(e))
    except PipelineInterrupted as e:
        typer.secho(str(e), fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(EXIT_PREEMPTED)
    print_summary(summary)


@app.command("report")
def report_cmd(run_dir: Path = typer.Argument(..., help="A pipeline (or phase) run directory.")) -> None:
    """(Re)generate RUN_DIR/report.html and RUN_DIR/tensorboard/ from the run's metrics."""
    from posttrain.pipeline.report import write_report

    if not Path(run_dir).is_dir():
        _fail(f"{run_dir} is not a directory")
    typer.echo(str(write_report(run_dir)))


@app.command("demo")
def demo_cmd(
    run_dir: Path = typer.Option(Path("runs/demo"), "--run-dir", help="Output directory."),
    sft_overrides: Optional[list[str]] = typer.Option(None, "--sft", help="key=value override for the SFT stage."),
    rl_overrides: Optional[list[str]] = typer.Option(None, "--rl", help="key=value override for the RL stage."),
    force: bool = typer.Option(False, "--force", help="Replace the run already in --run-dir."),
) -> None:
    """The short demo: task -> tiny model -> SFT -> GSPO on Ray+vLLM (`make demo` runs the full
    Keye pipeline, configs/recipes/keye.yaml, whose first two stages these are)."""
    from posttrain.core.config import ConfigError
    from posttrain.core.data import DatasetError
    from posttrain.core.run_dir import claim_run_dir
    from posttrain.pipeline.demo import print_summary, run_demo

    try:
        print_summary(run_demo(claim_run_dir(run_dir, force=force), {"sft": sft_overrides or [],
                                                                     "rl": rl_overrides or []}))
    except (ConfigError, DatasetError) as e:
        _fail(str(e))


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
