"""MPO: the TRL subclass computes exactly `mpo_loss` (delta included), and the tiny config runs."""

import json

import pytest
import torch

from posttrain.core.data import write_jsonl
from tests.posttrain.phase_fixtures import SMALL_MODEL, TINY, easy_pairs


def _equal_length_pairs(path, n=8):
    rows = [{"id": f"p{i}", "prompt": f"What is {i} + 10?", "chosen": str(10 + i), "rejected": str(20 + i)}
            for i in range(n)]
    write_jsonl(path, rows)
    return path


def _cfg(tmp_path, train, extra=()):
    from posttrain.core.config import load_config
    from posttrain.phases import mpo

    return load_config(mpo.Config, TINY / "mpo.yaml", [
        *SMALL_MODEL, f"data.train={train}", "data.eval=null", "data.eval_rows=null", "train.batch_size=8",
        "train.max_steps=2", *extra])


def _policy_terms(trainer, batch):
    """(chosen log-prob sums, rejected log-prob sums, chosen NLL) of the policy, by hand."""
    with torch.no_grad():
        logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
        mask = batch["completion_mask"][:, 1:].float()  # (2B, T-1)
        seq = (logp * mask).sum(-1)
        nll = -seq / mask.sum(-1)
    assert len(set(mask.sum(-1).tolist())) == 1  # equal lengths: token-mean NLL == mean of per-seq NLL
    pc, pr = seq.chunk(2)
    return pc, pr, nll.chunk(2)[0]


def test_trainer_loss_equals_mpo_loss_with_delta(tmp_path):
    from posttrain.core.run_dir import RunDir
    from posttrain.losses import mpo_loss
    from posttrain.phases import mpo
    from posttrain.phases.trl_common import resolve_model_path

    train = _equal_length_pairs(tmp_path / "pairs.jsonl")
    cfg = _cfg(tmp_path, train, ["mpo.beta=0.5"])
    run = RunDir(tmp_path / "run", "mpo")
    path = resolve_model_path(cfg.model, str(train), run)
    from posttrain.phases.pairs import load_pairs

    trainer = mpo.make_trainer(cfg, run, path, load_pairs(train))
    trainer.delta = mpo.RunningMean(0.7, 3)
    trainer.model.train()  # delta moves on training batches only
    batch = next(iter(trainer.get_train_dataloader()))
    loss = trainer._compute_loss(trainer.model, batch, False)
    pc, pr, nll = _policy_terms(trainer, batch)
    expected, metrics = mpo_loss(pc, pr, batch["ref_chosen_logps"], batch["ref_rejected_logps"], nll,
                                 beta=0.5, delta=0.7)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=1e-5)
    # delta is the running mean of batch mean rewards: (0.7 * 3 + this batch's mean) / 4
    assert trainer.delta.count == 4
    assert trainer.delta.mean == pytest.approx((0.7 * 3 + metrics["mpo/reward_mean"]) / 4, abs=1e-4)


def test_without_delta_is_trls_stock_mix(tmp_path):
    from posttrain.core.run_dir import RunDir
    from posttrain.losses import mpo_loss
    from posttrain.phases import mpo
    from posttrain.phases.pairs import load_pairs
    from posttrain.phases.trl_common import resolve_model_path

    train = _equal_length_pairs(tmp_path / "pairs.jsonl")
    cfg = _cfg(tmp_path, train, ["mpo.use_delta=false"])
    run = RunDir(tmp_path / "run", "mpo")
    trainer = mpo.make_trainer(cfg, run, resolve_model_path(cfg.model, str(train), run), load_pairs(train))
    trainer.delta = mpo.RunningMean(5.0, 1)  # ignored
    trainer.model.train()
    batch = next(iter(trainer.get_train_dataloader()))
    loss = trainer._compute_loss(trainer.model, batch, False)
    pc, pr, nll = _policy_terms(trainer, batch)
    stock, _ = mpo_loss(pc, pr, batch["ref_chosen_logps"], batch["ref_rejected_logps"], nll,
                        beta=trainer.beta, delta=0.0)  # no shift: TRL's sigmoid + bco_pair + sft mix
    torch.testing.assert_close(loss.detach(), stock, rtol=1e-4, atol=1e-5)
    assert trainer.delta.count == 1 and trainer.delta.mean == 5.0  # neither used nor updated


def test_tiny_config_raises_heldout_margin(tmp_path):
    from transformers import AutoModelForCausalLM

    from posttrain.core.config import load_config
    from posttrain.phases import mpo

    train, held = easy_pairs(tmp_path)
    cfg = load_config(mpo.Config, TINY / "mpo.yaml", [
        *SMALL_MODEL, f"data.train={train}", f"data.eval={held}", "data.eval_rows=null",
        "train.max_steps=12", "train.batch_size=16", "optim.lr=3e-3", "train.logging_steps=4"])
    s = mpo.run(cfg, tmp_path / "run")
    assert s["eval/margin"] > s["start/eval/margin"] + 1.0
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(x["phase"] == "mpo" for x in lines) and any("mpo/delta" in x for x in lines)
    AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final")
