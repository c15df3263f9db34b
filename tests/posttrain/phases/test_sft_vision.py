"""`posttrain sft` on image and video rows: TRL's vision collator with the model's processor, greedy
eval on held-out images, and a final folder that loads as an image-text model with its processor."""

from __future__ import annotations

import pytest

from posttrain.core.config import load_config
from posttrain.core.data import DatasetError, write_jsonl
from posttrain.phases import sft
from posttrain.phases.sft_data import load_source
from posttrain.tasks.visual import write_visual_task


def test_media_rows_become_content_parts_and_image_paths(tmp_path):
    write_visual_task("visual-video", tmp_path / "d" / "v.jsonl", 2, difficulty=1, seed=0)
    src = load_source(str(tmp_path / "d" / "v.jsonl"))
    row = src.rows[0]
    assert src.fmt == "conversational" and len(row["images"]) == 6
    parts = row["prompt"][0]["content"]
    assert [p["type"] for p in parts[:4]] == ["text", "image", "text", "image"] and parts[0]["text"] == "<slow 0.0s>"
    assert parts[-1] == {"type": "text", "text": "How many times did the dot move?"}
    assert all(p.startswith(str(tmp_path)) for p in row["images"])  # resolved relative to the file
    write_jsonl(tmp_path / "bad.jsonl", [{"id": "x", "prompt": "<image>?", "answer": "1", "images": ["no.png"]}])
    with pytest.raises(DatasetError, match=r"bad\.jsonl:1: row 'x': images\[0\] 'no.png': no such file"):
        load_source(str(tmp_path / "bad.jsonl"))


def test_sft_trains_an_image_text_model(tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    write_visual_task("visual-count", tmp_path / "train.jsonl", 16, difficulty=1, seed=0,
                      eval_out=tmp_path / "eval.jsonl", n_eval=4)
    cfg = load_config(sft.Config, None, [  # model.init=tiny + tiny_vision: the tiny Idefics3 built from the rows
        "model.init=tiny", "model.tiny_vision=true", "model.tiny_layers=1", f"data.train={tmp_path / 'train.jsonl'}", f"data.eval={tmp_path / 'eval.jsonl'}",
        "train.max_steps=3", "train.batch_size=4", "train.max_length=128", "train.logging_steps=1",
        "optim.lr=1e-3", "eval.every=0", "eval.max_new_tokens=3"])
    s = sft.run(cfg, tmp_path / "run")
    assert AutoProcessor.from_pretrained(s["start_model"]).image_processor is not None
    assert s["steps"] == 3 and s["train_loss"] > 0 and s["eval/accuracy"] is not None
    AutoProcessor.from_pretrained(tmp_path / "run" / "final")
    AutoModelForImageTextToText.from_pretrained(tmp_path / "run" / "final")
