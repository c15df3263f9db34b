"""SFT: dataset formats and mixing, and the tiny config end to end (CLI, run dir, final/)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from posttrain.core.data import DatasetError, write_jsonl
from posttrain.phases.sft_data import SourceRows, load_source, mix_sources, normalize_row
from tests.posttrain.phase_fixtures import SMALL_MODEL, TINY, task_files


def test_row_formats_normalize():
    assert normalize_row({"prompt": "p", "completion": "c"}, "f", 1) == (
        "prompt_completion", {"prompt": "p", "completion": "c"})
    fmt, row = normalize_row({"messages": [{"role": "user", "content": "q"},
                                           {"role": "assistant", "content": "a"}]}, "f", 1)
    assert fmt == "conversational" and row["completion"] == [{"role": "assistant", "content": "a"}]
    fmt, row = normalize_row({"id": "x", "prompt": "What is 1 + 2?", "answer": "3"}, "f", 1)
    assert fmt == "conversational"
    assert row == {"prompt": [{"role": "user", "content": "What is 1 + 2?"}],
                   "completion": [{"role": "assistant", "content": "3"}]}
    assert normalize_row({"text": "t"}, "f", 1) == ("text", {"text": "t"})


@pytest.mark.parametrize("row, msg", [
    ({"prompt": "p", "completion": ""}, r"d\.jsonl:2: field 'completion' is missing or empty"),
    ({"question": "p", "response": "r"}, r"d\.jsonl:2: unknown row format \(keys: question, response\)"),
    ({"messages": [{"role": "user", "content": "q"}]}, r"d\.jsonl:2: field 'messages' must end with an assistant"),
    ({"text": "t"}, r"d\.jsonl:2: row is in 'text' format but earlier rows are 'prompt_completion'"),
])
def test_bad_rows_name_file_and_row(tmp_path, row, msg):
    write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "completion": "c"}, row])
    with pytest.raises(DatasetError, match=msg):
        load_source(str(tmp_path / "d.jsonl"))


def test_unknown_file_type(tmp_path):
    (tmp_path / "d.csv").write_text("a,b\n")
    with pytest.raises(DatasetError, match=r"d\.csv: unknown dataset file type '\.csv'"):
        load_source(str(tmp_path / "d.csv"))


def test_parquet_source(tmp_path):
    from datasets import Dataset

    Dataset.from_list([{"prompt": "p", "completion": "c"}, {"prompt": "q", "completion": ""}]).to_parquet(
        str(tmp_path / "d.parquet"))
    with pytest.raises(DatasetError, match=r"d\.parquet:2: field 'completion'"):
        load_source(str(tmp_path / "d.parquet"))



def test_hinted_copies_carry_the_rows_hints_at_distinct_levels(tmp_path):
    from posttrain.tasks.addition import make_addition_rows

    rows = make_addition_rows(30, seed=1)
    write_jsonl(tmp_path / "t.jsonl", rows + [{"id": "plain", "prompt": "What is 1 + 1?", "answer": "2"}])
    src = load_source(str(tmp_path / "t.jsonl"), hinted_copies=2, hint_seed=3)
    assert len(src.rows) == 30 * 3 + 1  # a row without hints is kept once
    levels_used = set()
    for i, row in enumerate(rows):
        plain, *copies = src.rows[3 * i:3 * i + 3]
        assert plain["prompt"][0]["content"] == row["prompt"]
        levels = [row["hints"].index(c["prompt"][0]["content"].split("\n", 1)[1]) + 1 for c in copies]
        assert len(set(levels)) == 2 and all(c["prompt"][0]["content"].startswith(row["prompt"] + "\n") for c in copies)
        assert all(c["completion"] == plain["completion"] for c in copies)
        levels_used.update(levels)
    assert levels_used == {1, 2, 3, 4, 5}
    assert load_source(str(tmp_path / "t.jsonl"), hinted_copies=2, hint_seed=3).rows == src.rows
    assert load_source(str(tmp_path / "t.jsonl"), hinted_copies=2, hint_seed=4).rows != src.rows
    assert len(load_source(str(tmp_path / "t.jsonl")).rows) == 31


def test_hinted_copies_name_the_row_with_bad_hints(tmp_path):
    write_jsonl(tmp_path / "t.jsonl", [{"id": "a", "prompt": "q", "answer": "1", "hints": ["h"] * 5},
                                       {"id": "b", "prompt": "q", "answer": "1", "hints": ["h"]}])
    with pytest.raises(DatasetError, match=r"t\.jsonl:2: field 'hints' must be a list of 5 strings"):
        load_source(str(tmp_path / "t.jsonl"), hinted_copies=1)
    from posttrain.core.config import ConfigError, load_config
    from posttrain.phases.sft import Config

    with pytest.raises(ConfigError, match="data.hint_template"):
        load_config(Config, None, ["data.train=x.jsonl", "data.hint_template={question}"])

def test_mix_by_weight():
    a = SourceRows("a", "text", [{"text": f"a{i}"} for i in range(10)])
    b = SourceRows("b", "text", [{"text": f"b{i}"} for i in range(3)])
    mixed = mix_sources([a, b], [1.0, 3.0], total=40, seed=0)
    n_b = sum(r["text"].startswith("b") for r in mixed.rows)
    assert len(mixed.rows) == 40 and n_b == 30  # b repeats to fill its share
    with pytest.raises(DatasetError, match="different formats"):
        mix_sources([a, SourceRows("c", "conversational", [{"prompt": [], "completion": []}])], [1, 1])


def test_tiny_config_cli(tmp_path):
    """configs/tiny/sft.yaml through the CLI, shrunk: run dir contract and a loadable final/."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from posttrain.cli import app

    train, held = task_files(tmp_path)
    # two weighted sources and a LoRA adapter merged into final/
    args = ["sft", "--config", str(TINY / "sft.yaml"), "--run-dir", str(tmp_path / "run"),
            *SMALL_MODEL, f"data.train=[{{path: {train}, weight: 1}}, {{path: {train}, weight: 2}}]",
            f"data.eval={held}", "data.mix_rows=120", "train.max_steps=6", "train.batch_size=8",
            "train.logging_steps=2", "eval.every=3", "eval.max_rows=16"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    run = tmp_path / "run"
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(x["phase"] == "sft" and isinstance(x["step"], int) for x in lines)
    assert [x["step"] for x in lines if "eval/accuracy" in x] == [0, 3, 6]
    assert json.loads((run / "summary.json").read_text())["steps"] == 6
    assert (run / "config.yaml").is_file()
    model = AutoModelForCausalLM.from_pretrained(run / "final")
    tok = AutoTokenizer.from_pretrained(run / "final")
    assert model.config.vocab_size >= len(tok)


def test_lora_merge_gives_a_plain_model(tmp_path):
    from transformers import AutoModelForCausalLM

    from posttrain.core.config import load_config
    from posttrain.phases import sft

    train, held = task_files(tmp_path, n=64, n_eval=8)
    cfg = load_config(sft.Config, TINY / "sft.yaml", [
        *SMALL_MODEL, f"data.train={train}", f"data.eval={held}", "train.max_steps=3", "train.batch_size=8",
        "lora.enabled=true", "lora.r=4", "lora.merge=true", "optim.lr=1e-2"])
    summary = sft.run(cfg, tmp_path / "run")
    final = tmp_path / "run" / "final"
    assert not (final / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(final)
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "init_model")
    diff = sum((a - b).abs().sum().item() for a, b in zip(merged.parameters(), base.parameters()))
    assert diff > 0 and summary["steps"] == 3


def test_device_comes_from_config():
    from posttrain.core.config import ModelConfig, OptimConfig
    from posttrain.phases.trl_common import TrainLoop, training_kwargs

    gpu = training_kwargs(TrainLoop(), OptimConfig(), ModelConfig(device="cuda", dtype="bfloat16"), "out")
    cpu = training_kwargs(TrainLoop(), OptimConfig(), ModelConfig(), "out")
    assert gpu["use_cpu"] is False and gpu["bf16"] is True
    assert cpu["use_cpu"] is True and cpu["bf16"] is False


def test_constant_schedule_keeps_its_warmup():
    from posttrain.core.config import ModelConfig, OptimConfig
    from posttrain.phases.trl_common import TrainLoop, training_kwargs

    kw = training_kwargs(TrainLoop(), OptimConfig(warmup_steps=10), ModelConfig(), "out")
    assert kw["lr_scheduler_type"] == "constant_with_warmup"
    assert training_kwargs(TrainLoop(), OptimConfig(scheduler="cosine"), ModelConfig(), "o")["lr_scheduler_type"] == "cosine"


def test_resume_continues_from_the_last_checkpoint(tmp_path):
    from posttrain.core.config import load_config
    from posttrain.phases import sft

    train, held = task_files(tmp_path, n=64, n_eval=8)
    base = [*SMALL_MODEL, f"data.train={train}", f"data.eval={held}", "train.batch_size=8",
            "train.save_steps=2", "train.logging_steps=1", "eval.every=0"]
    sft.run(load_config(sft.Config, TINY / "sft.yaml", [*base, "train.max_steps=2"]), tmp_path / "run")
    s = sft.run(load_config(sft.Config, TINY / "sft.yaml", [*base, "train.max_steps=4"]), tmp_path / "run",
                resume=True)
    assert s["steps"] == 4
    steps = [json.loads(x)["step"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
             if "sft/loss" in x]
    assert steps == [1, 2, 3, 4]  # resumed at step 3, not from scratch


def test_missing_train_data_says_the_fix(tmp_path):
    from posttrain.core.config import ConfigError, load_config
    from posttrain.phases import sft

    cfg = load_config(sft.Config, TINY / "sft.yaml", ["data.train=null"])
    with pytest.raises(ConfigError, match=r"field 'data.train' is not set; pass data.train=PATH"):
        sft.run(cfg, tmp_path / "run")


@pytest.mark.slow  # two CLI starts (~45 s on 2 busy cores); the RL SIGTERM test covers the CLI path fast
def test_sigterm_checkpoints_exits_preempted_and_resumes(tmp_path):
    """SIGTERM mid-training: a checkpoint at the end of the current step, exit code 3, no
    final/; `--resume` continues from that checkpoint to a finished run."""
    from posttrain.core.stop import EXIT_PREEMPTED

    train, _ = task_files(tmp_path, n=64, n_eval=8)
    run = tmp_path / "run"
    args = ["--config", str(TINY / "sft.yaml"), *SMALL_MODEL, f"data.train={train}", "data.eval=null",
            "train.max_steps=5000", "train.batch_size=4", "train.logging_steps=1", "train.save_steps=100000",
            "eval.every=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "posttrain.cli", "sft"]
    p = subprocess.Popen([*cmd, *args, "--run-dir", str(run)], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline and '"sft/loss"' not in ((run / "metrics.jsonl").read_text()
                                                          if (run / "metrics.jsonl").exists() else ""):
        assert p.poll() is None, p.stdout.read().decode()[-2000:]
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    out = p.communicate(timeout=300)[0].decode()
    assert p.returncode == EXIT_PREEMPTED, out[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["preempted"] is True and 0 < summary["steps"] < 5000
    assert summary["checkpoint"].endswith(f"checkpoint-{summary['steps']}") and not (run / "final").exists()
    done = subprocess.run([*cmd, "--resume", str(run), f"train.max_steps={summary['steps'] + 2}"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert json.loads((run / "summary.json").read_text())["steps"] == summary["steps"] + 2
    assert (run / "final" / "config.json").is_file()


def test_bf16_trains_mixed_precision_on_cpu_with_fp32_master_weights(tmp_path):
    """model.dtype=bfloat16 is TrainingArguments' bf16 autocast on CPU too; weights stay (and save) fp32."""
    import torch
    from transformers import AutoModelForCausalLM

    from posttrain.core.config import ModelConfig, OptimConfig, load_config
    from posttrain.phases import sft
    from posttrain.phases.trl_common import TrainLoop, training_kwargs, weights_dtype

    assert training_kwargs(TrainLoop(), OptimConfig(), ModelConfig(dtype="bfloat16"), "o")["bf16"] is True
    # `auto` keeps TRL's autocast off on any CPU (measured no faster than fp32 there, docs/precision.md)
    assert training_kwargs(TrainLoop(), OptimConfig(), ModelConfig(dtype="auto"), "o")["bf16"] is False
    assert weights_dtype(ModelConfig(dtype="bfloat16")) == "float32"
    train, held = task_files(tmp_path, n=64, n_eval=8)
    cfg = load_config(sft.Config, TINY / "sft.yaml", [
        *SMALL_MODEL, f"data.train={train}", f"data.eval={held}", "train.max_steps=3", "train.batch_size=8",
        "model.dtype=bfloat16", "optim.lr=1e-2"])
    summary = sft.run(cfg, tmp_path / "run")
    assert (summary["steps"], summary["trainer/dtype"], summary["trainer/dtype_reason"]) == (3, "bfloat16",
                                                                                             "set explicitly")
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final").dtype == torch.float32
