"""RFT and the filter stage on image and video rows: the media travel with the prompts to the
generator (by path), RFT's kept samples keep their row's media so its SFT step trains on them
with the processor, and bad media or a text model fail with errors naming the file and row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from posttrain.core.config import ConfigError, ModelConfig, load_config
from posttrain.core.data import DatasetError, load_rows, write_jsonl
from posttrain.phases import filter as filter_phase
from posttrain.phases import rft
from posttrain.phases.sft_data import load_source
from posttrain.tasks.visual import write_visual_task
from rollouts.types import Rollout
from tests.posttrain.phase_fixtures import TINY


class Recorder:
    """Wraps a generator (or answers by script when `inner` is None: every other sample right) and
    records the media of every prompt it is given."""

    weight_version = 0

    def __init__(self, inner=None, answers=None):
        self.inner, self.answers, self.media = inner, answers, {}

    def generate(self, prompts, sampling, step=0):
        self.media.update({p.prompt_id: p.media for p in prompts})
        if self.inner is not None:
            return self.inner.generate(prompts, sampling, step)
        return [Rollout(p.prompt_id, i, list(p.token_ids), [5], [-0.1], self.answers[p.prompt_id] if i % 2 else "9",
                        "stop", 0, step) for p in prompts for i in range(sampling.n)]

    def update_weights(self, state_dict, version):
        pass

    def close(self):
        pass


@pytest.fixture(scope="module")
def vision_task(tmp_path_factory):
    """6 image rows and 2 six-frame video rows in one file, 4 held-out image rows, a 1-layer tiny Idefics3."""
    from posttrain.tasks.tiny_vision import make_tiny_vision_model

    d = tmp_path_factory.mktemp("vis")
    write_visual_task("visual-quadrants", d / "q.jsonl", 6, difficulty=2, seed=0, eval_out=d / "eval.jsonl", n_eval=4)
    write_visual_task("visual-video", d / "v.jsonl", 2, difficulty=1, seed=0)
    rows = load_rows(d / "q.jsonl") + load_rows(d / "v.jsonl")  # media paths absolute from here on
    write_jsonl(d / "mix.jsonl", rows)
    model = make_tiny_vision_model(rows + load_rows(d / "eval.jsonl"), d / "vlm", layers=1)
    return d, rows, str(model)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_rft_samples_with_the_media_and_retrains_on_kept_image_samples(vision_task, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from rollouts.hf import HFGenerator

    d, rows, model = vision_task
    cfg = load_config(rft.Config, TINY / "rft.yaml", [
        f"model.path={model}", f"data.prompts={d / 'mix.jsonl'}", f"data.eval={d / 'eval.jsonl'}", "sampling.k=2",
        "sampling.max_tokens=3", "filter.reward.threshold=0.0", "filter.max_per_prompt=1", "sft.train.max_steps=2",
        "sft.train.batch_size=4", "sft.train.max_length=256", "eval.max_rows=4", "eval.max_new_tokens=3"])
    gen = Recorder(HFGenerator(model))
    s = rft.run(cfg, tmp_path / "run", generator=gen)
    by_id = {r["id"]: r for r in rows}
    for rid, media in gen.media.items():  # every prompt reached the generator with its row's images / frames
        row = by_id[rid]
        want = row.get("images") or row["video"]["frames"]
        assert media is not None and list(media.images) == want, rid
    assert set(gen.media) == set(by_id)
    run = tmp_path / "run"
    kept = _jsonl(run / "kept.jsonl")
    assert len(kept) == len(rows) == s["rft/kept"]  # threshold 0 keeps one sample per prompt
    for k in kept:
        src = by_id[k["prompt_id"]]
        assert k.get("images") == src.get("images") and k.get("video") == src.get("video")
    assert all(r.get("images") or r.get("video") for r in _jsonl(run / "scored.jsonl"))  # pairs can carry them
    trained = load_source(str(run / "kept.jsonl"))  # what the SFT step trains on: TRL's vision rows
    assert trained.fmt == "conversational" and all(r["images"] for r in trained.rows)
    assert sorted(len(r["images"]) for r in trained.rows) == [1] * 6 + [6, 6]
    assert s["sft_steps"] == 2 and s["eval/accuracy"] is not None
    AutoProcessor.from_pretrained(run / "final")
    AutoModelForImageTextToText.from_pretrained(run / "final")


def test_filter_samples_with_the_media_and_keeps_the_rows_media(vision_task, tmp_path):
    d, rows, model = vision_task
    cfg = load_config(filter_phase.Config, None, [f"model.path={model}", f"data.prompts={d / 'mix.jsonl'}",
                                                  "sampling.k=2"])
    gen = Recorder(answers={r["id"]: r["answer"] for r in rows})
    s = filter_phase.run(cfg, tmp_path / "run", generator=gen)
    assert s["filter/kept"] == len(rows)  # 1 of 2 right: every prompt in (0, 1)
    assert all(gen.media[r["id"]].images == tuple(r.get("images") or r["video"]["frames"]) for r in rows)
    kept = load_rows(tmp_path / "run" / "rl_prompts.jsonl")  # loads (the media exist) from another directory
    assert [(k.get("images"), k.get("video")) for k in kept] == [(r.get("images"), r.get("video")) for r in rows]


def test_bad_media_and_a_text_model_are_clear_errors(vision_task, tmp_path):
    d, rows, model = vision_task
    write_jsonl(tmp_path / "bad.jsonl", [rows[0], {**rows[1], "images": ["gone.png"]}])
    for phase, extra in ((rft, [f"data.eval={d / 'eval.jsonl'}"]), (filter_phase, [])):
        cfg = load_config(phase.Config, None, [f"model.path={model}", f"data.prompts={tmp_path / 'bad.jsonl'}", *extra])
        with pytest.raises(DatasetError, match=rf"bad\.jsonl:2: row '{rows[1]['id']}': images\[0\] 'gone.png': "
                                               "no such file"):
            phase.run(cfg, tmp_path / phase.__name__, generator=Recorder())
    text_model = tmp_path / "text-model"
    text_model.mkdir()
    (text_model / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    with pytest.raises(ConfigError, match=rf"mix\.jsonl: row '{rows[0]['id']}' has images or video, but "
                                          "model.path .* is not an image-text model"):
        rft.media_processor(ModelConfig(path=str(text_model)), rows, str(d / "mix.jsonl"))
