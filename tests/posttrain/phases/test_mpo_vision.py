"""MPO on image preference pairs: the pairs built from scored image samples keep their images, the
trainer's loss (reference log-probs computed per batch, since TRL cannot precompute them for vision
data) equals `mpo_loss` with delta on the pixels, and a short run raises the held-out margin."""

from __future__ import annotations

import json

import pytest
import torch

from posttrain.core.config import load_config
from posttrain.core.data import load_rows, write_jsonl
from posttrain.phases import mpo
from posttrain.phases.pairs import build_pairs, load_pairs
from posttrain.tasks.visual import write_visual_task
from tests.posttrain.phase_fixtures import TINY


def _pair(row):  # a count vs a word of the prompt: a style a few steps can learn
    return {"id": row["id"], "prompt": row["prompt"], "chosen": row["answer"], "rejected": "red",
            "images": row["images"]}


@pytest.fixture(scope="module")
def image_pairs(tmp_path_factory):
    from posttrain.tasks.tiny_vision import make_tiny_vision_model

    d = tmp_path_factory.mktemp("mpo-vis")
    write_visual_task("visual-quadrants", d / "q.jsonl", 32, difficulty=2, seed=0, eval_out=d / "eval.jsonl", n_eval=8)
    rows, held = load_rows(d / "q.jsonl"), load_rows(d / "eval.jsonl")
    write_jsonl(d / "train_pairs.jsonl", [_pair(r) for r in rows])
    write_jsonl(d / "eval_pairs.jsonl", [_pair(r) for r in held])
    return d, str(make_tiny_vision_model(rows + held, d / "vlm", layers=1))


def _cfg(d, model, extra=()):
    return load_config(mpo.Config, TINY / "mpo.yaml", [
        f"model.path={model}", f"data.train={d / 'train_pairs.jsonl'}", f"data.eval={d / 'eval_pairs.jsonl'}",
        f"data.eval_rows={d / 'eval.jsonl'}", "train.batch_size=4", "train.max_length=128", "eval.max_new_tokens=3",
        *extra])


def test_pairs_from_scored_image_samples_keep_their_images(tmp_path):
    scored = [{"prompt_id": "a", "prompt": "<image>How many?", "completion": c, "reward": r, "answer": "2",
               "images": ["/m/a.png"]} for c, r in (("2", 1.0), ("3", 0.0))]
    write_jsonl(tmp_path / "scored.jsonl", scored)
    pairs, _ = build_pairs(tmp_path / "scored.jsonl")
    assert pairs[0]["images"] == ["/m/a.png"] and (pairs[0]["chosen"], pairs[0]["rejected"]) == ("2", "3")
    write_jsonl(tmp_path / "bad.jsonl", [{**pairs[0], "images": ["gone.png"]}])
    with pytest.raises(Exception, match=r"bad\.jsonl:1: row 'a': images\[0\] 'gone.png': no such file"):
        load_pairs(tmp_path / "bad.jsonl")


def test_loss_on_image_pairs_is_mpo_loss_with_per_batch_reference_on_the_pixels(image_pairs, tmp_path):
    from posttrain.core.run_dir import RunDir
    from posttrain.losses import mpo_loss

    d, model = image_pairs
    cfg = _cfg(d, model, ["mpo.beta=0.5"])
    train = load_pairs(cfg.data.train)
    assert train[0]["images"] and train[0]["prompt"][0]["content"][0] == {"type": "image"}
    trainer = mpo.make_trainer(cfg, RunDir(tmp_path / "run", "mpo"), model, train)
    trainer.model.train()
    with torch.no_grad():  # perturb the policy so it differs from the frozen reference
        for p in trainer.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["pixel_values"].shape[0] == 2 * 4  # each pair's images, for its chosen and its rejected side
    trainer.delta = mpo.RunningMean(0.7, 3)
    loss = trainer._compute_loss(trainer.model, batch, False)

    def seq_logps(m, pixels):
        inputs = {k: v for k, v in batch.items() if k != "completion_mask"}
        with torch.no_grad():
            logits = m(**{**inputs, "pixel_values": pixels}).logits[:, :-1].float()
        logp = torch.log_softmax(logits, -1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
        return (logp * batch["completion_mask"][:, 1:]).sum(-1)  # (2B,)

    pixels = batch["pixel_values"]
    policy, ref = seq_logps(trainer.model, pixels), seq_logps(trainer.ref_model, pixels)
    (pc, pr), (rc, rr) = policy.chunk(2), ref.chunk(2)
    n_chosen = batch["completion_mask"][:, 1:].sum(-1).chunk(2)[0]
    assert len(set(n_chosen.tolist())) == 1  # chosen sides of one length: NLL token mean = mean of per-side means
    expected, metrics = mpo_loss(pc, pr, rc, rr, -pc / n_chosen[0], beta=0.5, delta=0.7)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=1e-5)
    assert trainer.delta.count == 4
    assert trainer.delta.mean == pytest.approx((0.7 * 3 + metrics["mpo/reward_mean"]) / 4, abs=1e-4)
    assert not torch.allclose(ref, seq_logps(trainer.ref_model, pixels.roll(1, 0)))  # the images matter


def test_a_short_mpo_run_on_image_pairs_raises_the_heldout_margin(image_pairs, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    d, model = image_pairs
    s = mpo.run(_cfg(d, model, ["train.max_steps=8", "optim.lr=3e-3", "optim.warmup_steps=0",
                                "train.logging_steps=2"]), tmp_path / "run")
    assert s["eval/pairs"] == 8 and s["eval/margin"] > s["start/eval/margin"] + 0.5, s
    assert s["eval/accuracy"] is not None and s["delta"] != 0.0
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("mpo/delta" in x for x in lines)
    AutoProcessor.from_pretrained(tmp_path / "run" / "final")
    AutoModelForImageTextToText.from_pretrained(tmp_path / "run" / "final")
