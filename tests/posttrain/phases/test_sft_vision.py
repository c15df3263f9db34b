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


def test_collated_batch_keeps_each_rows_images_with_its_own_image_tokens(tmp_path):
    # Rows of 1 and 3 images in one batch (TRL's vision collator pads the short row with blank
    # images): each row's image tokens, pixels and logits are what that row gets alone.
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from posttrain.core.data import load_rows
    from posttrain.phases.sft_data import to_dataset
    from posttrain.tasks.tiny_vision import make_tiny_vision_model

    write_visual_task("visual-quadrants", tmp_path / "q.jsonl", 4, difficulty=3, seed=0)
    rows = load_rows(tmp_path / "q.jsonl")
    three = {**rows[1], "prompt": "<image><image>" + rows[1]["prompt"], "images": [r["images"][0] for r in rows[1:4]]}
    write_jsonl(tmp_path / "mix.jsonl", [rows[0], three])
    make_tiny_vision_model(rows, tmp_path / "vlm", layers=1)
    processor = AutoProcessor.from_pretrained(tmp_path / "vlm")
    ds = to_dataset(load_source(str(tmp_path / "mix.jsonl")))
    collate = DataCollatorForVisionLanguageModeling(processor=processor, completion_only_loss=True)
    batch = collate([dict(ds[0]), dict(ds[1])])
    alone = [collate([dict(ds[i])]) for i in range(2)]
    per_image = (batch["input_ids"][1] == processor.image_token_id).sum() // 3
    assert ((batch["input_ids"] == processor.image_token_id).sum(1) == torch.tensor([1, 3]) * per_image).all()
    assert torch.equal(batch["pixel_values"][0, :1], alone[0]["pixel_values"][0])
    assert (batch["pixel_values"][0, 1:] == 0).all()  # the padding images the model drops
    assert torch.equal(batch["pixel_values"][1], alone[1]["pixel_values"][0])
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "vlm").eval()
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        for i, b in enumerate(alone):
            own = model(**{k: v for k, v in b.items() if k != "labels"}).logits[0]
            torch.testing.assert_close(logits[i][batch["labels"][i] != -100], own[b["labels"][0] != -100],
                                       atol=1e-5, rtol=1e-5)
