"""The mm_rollout workload's glue without an engine: the rounds, the headline, the HF contender on the
tiny VLM, and the results file and docs page that carry them."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import report, stats
from benchmarks.mm_rollout import alternate, hf_media_generate, hf_media_inputs, image_prompts, summarise


def test_rounds_time_every_contender_in_a_rotating_order():
    calls: list[tuple[str, int]] = []

    def timed(name, secs, tokens):
        def f(r):
            calls.append((name, r))
            return secs, tokens
        return f

    rows = alternate({"pool": timed("pool", 2.0, 100), "hf": timed("hf", 4.0, 100), "hf_1t": timed("hf_1t", 5.0, 100)},
                     repeats=3)
    assert [r["order"] for r in rows] == [["pool", "hf", "hf_1t"], ["pool", "hf_1t", "hf"],
                                          ["hf_1t", "pool", "hf"]]
    assert calls[:3] == [("pool", 0), ("hf", 0), ("hf_1t", 0)] and len(calls) == 9
    assert rows[0]["pool_tok_s"] == 50.0 and rows[0]["hf_tok_s"] == 25.0 and rows[0]["hf_1t_tokens"] == 100


def test_headline_takes_the_faster_engine_dtype_and_the_fastest_hf_variant_per_round():
    def rnd(r, pool, hf, hf_1t, hf_bf16):
        return {"repeat": r, "pool_tok_s": pool, "hf_tok_s": hf, "hf_1t_tok_s": hf_1t, "hf_bf16_tok_s": hf_bf16}

    phases = {"float32": [rnd(0, 100.0, 50.0, 80.0, 40.0), rnd(1, 120.0, 60.0, 40.0, 30.0),
                          rnd(2, 90.0, 45.0, 45.0, 90.0)],
              "bfloat16": [rnd(0, 50.0, 50.0, 50.0, 100.0), rnd(1, 60.0, 60.0, 60.0, 60.0),
                           rnd(2, 70.0, 70.0, 70.0, 35.0)]}
    headline, details = summarise(phases)
    # fp32 engine (median 100) beats bf16 (60): ratios 100/80, 120/60, 90/90
    assert details["engine_dtype_best"] == "float32"
    assert [r["hf_best"] for r in phases["float32"]] == ["hf_1t", "hf", "hf_bf16"]
    assert headline == {"mm_rollout_vs_hf": 1.25, "mm_rollout_vs_hf_min": 1.0, "mm_rollout_vs_hf_max": 2.0,
                        "mm_rollout_vs_hf_n": 3}
    assert details["float32/pool_tok_s_median"] == 100.0 and details["bfloat16/hf_bf16_tok_s_median"] == 60.0


def test_hf_contender_generates_exactly_n_times_tokens_per_image_prompt(tmp_path):
    from transformers import AutoModelForImageTextToText

    model_dir, prompts, processor = image_prompts(tmp_path, 3, layers=1)
    assert len(prompts) == 3 and all(p.media and len(p.media.images) == 1 for p in prompts)
    inputs = hf_media_inputs(processor, prompts)
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    # the processor re-expanded each prompt's one image token into the model's 4 visual tokens
    assert (inputs["input_ids"] == image_id).sum(1).tolist() == [4, 4, 4]
    assert inputs["pixel_values"].shape[:2] == (3, 1)
    model = AutoModelForImageTextToText.from_pretrained(str(model_dir)).eval()
    before = torch.get_num_threads()
    secs, tokens = hf_media_generate(model, processor, prompts, n=2, tokens=5, seed=0, threads=1)
    assert tokens == 3 * 2 * 5 and secs > 0 and torch.get_num_threads() == before  # the caller's threads restored
    bf16 = AutoModelForImageTextToText.from_pretrained(str(model_dir), dtype=torch.bfloat16).eval()
    assert hf_media_generate(bf16, processor, prompts[:1], n=3, tokens=4, seed=0, threads=1)[1] == 12


def test_results_and_docs_carry_the_multimodal_rollout_ratio(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "ANALYSIS", tmp_path / "none.md")
    rounds = [{"repeat": r, "pool_tok_s": 3000.0, "hf_tok_s": 1000.0 + r, "hf_1t_tok_s": 1500.0,
               "loadavg_1m_start": [2.0]} for r in range(3)]
    headline, medians = summarise({"float32": rounds})
    r: dict = {"details": {}}
    stats.merge_workload(r, "mm_rollout", headline, {
        "model": "tiny Idefics3", "parameters": 1_000_000, "task": "visual-quadrants difficulty 3", "prompts": 64,
        "images_per_prompt": 1, "samples_per_prompt": 8, "new_tokens": 128, "engine_start_s": {"float32": 30.0},
        "enforce_eager": False, "phases": {"float32": rounds}, **medians})
    data = json.loads(stats.write_results(tmp_path / "results.json", r, machine={"cpu_count": 2}).read_text())
    assert data["mm_rollout_vs_hf"] == 2.0 and data["targets"]["mm_rollout_vs_hf"] == {
        "target": 1.0, "better": "higher", "met": True}
    text = report.render(data)
    assert "| `mm_rollout_vs_hf`" in text and "## 8. Multimodal rollouts (tiny VLM)" in text
    row = next(line for line in text.splitlines() if line.startswith("| float32 | 0 |"))
    assert "| 3,000.00 | 1,000.00 | 1,500.00 | `hf_1t` | 2.00 |" in row


@pytest.mark.parametrize("missing", [None, {"error": "boom"}])
def test_no_section_without_measured_rounds(missing):
    assert report.mm_rollout_section(missing) == []
