"""Alignment RL on image rows: `posttrain align` builds the GSPO trainer, which loads an image-text
model's processor, so its rollouts, its constraint eval and its task guard all sample with the
rows' images, and the final model is saved with the processor."""

from __future__ import annotations

from posttrain.core.config import load_config
from posttrain.core.data import load_rows
from posttrain.rl import align
from posttrain.tasks.visual import write_visual_task
from rollouts.hf import HFGenerator


def test_a_short_align_run_on_image_rows_samples_every_prompt_with_its_images(tmp_path, monkeypatch):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from posttrain.tasks.tiny_vision import make_tiny_vision_model

    d = tmp_path / "data"
    write_visual_task("visual-quadrants", d / "train.jsonl", 8, difficulty=2, seed=0, eval_out=d / "eval.jsonl",
                      n_eval=4)
    write_visual_task("visual-quadrants", d / "task.jsonl", 4, difficulty=2, seed=1)
    rows = {r["id"] + f"@{f}": r for f in ("train", "eval", "task") for r in load_rows(d / f"{f}.jsonl")}
    model = make_tiny_vision_model([r for r in rows.values()], tmp_path / "vlm", layers=1)
    seen = []
    generate = HFGenerator.generate

    def recording(self, prompts, sampling, step=0):
        seen.extend(p.media for p in prompts)
        return generate(self, prompts, sampling, step)

    monkeypatch.setattr(HFGenerator, "generate", recording)
    cfg = load_config(align.Config, None, [
        f"model.path={model}", f"data.train={d / 'train.jsonl'}", f"data.eval={d / 'eval.jsonl'}",
        "rollout.backend=hf", "rollout.prompts_per_step=4", "rollout.group_size=2", "rollout.max_new_tokens=3",
        "train.steps=2", "eval.every=2", "eval.max_new_tokens=3", "optim.lr=1e-3", "reward.workers=1",
        "reward.components=[{name: exact}]", "eval.reward=exact",
        f"eval.extra_evals=[{{name: task_accuracy, data: '{d / 'task.jsonl'}', reward: exact}}]"])
    s = align.run(cfg, tmp_path / "run")
    assert s["task_accuracy_before"] is not None and s["task_accuracy_after"] is not None
    images = {tuple(r["images"]) for r in rows.values()}
    assert seen and all(m is not None and m.images in images for m in seen)
    assert len({m.images for m in seen}) >= 8 + 4  # the training prompts and both held-out sets
    AutoProcessor.from_pretrained(tmp_path / "run" / "final")
    AutoModelForImageTextToText.from_pretrained(tmp_path / "run" / "final")
