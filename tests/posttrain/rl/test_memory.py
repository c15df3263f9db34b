"""The trainer's memory levers (posttrain/rl/memory.py, optim.py, update.py): same arithmetic, less held."""

from __future__ import annotations

import copy

import torch
from transformers import AutoModelForCausalLM

from posttrain.core.config import load_config
from posttrain.rl.config import Config
from posttrain.rl.memory import sparse_tied_embedding_grad
from posttrain.rl.optim import make_optimizer
from posttrain.rl.policy_losses import POLICY_LOSSES
from posttrain.rl.update import gspo_update
from rollouts.types import Rollout

PROMPTS, RESPONSES = [[1, 2, 3], [4, 5], [6, 7, 8, 9]], [[4, 5], [6, 7, 8], [9]]


def _loss_grad(model) -> torch.Tensor:
    ids = torch.tensor([[1, 2, 3, 4, 5, 2, 2]])
    model.zero_grad(set_to_none=True)
    model(input_ids=ids, labels=ids).loss.backward()
    return model.get_input_embeddings().weight.grad


def test_a_tied_embedding_gets_one_dense_gradient_equal_to_the_dense_lookup(tiny_model):
    dense = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    sparse = copy.deepcopy(dense)
    assert dense.get_output_embeddings().weight is dense.get_input_embeddings().weight  # the tiny model ties
    assert sparse_tied_embedding_grad(sparse) and sparse.get_input_embeddings().sparse
    g_dense, g_sparse = _loss_grad(dense), _loss_grad(sparse)
    assert not g_sparse.is_sparse and g_sparse.layout == torch.strided
    assert torch.allclose(g_sparse, g_dense, atol=1e-7, rtol=1e-6)
    assert g_dense[2].abs().sum() > 0  # a looked-up row: the lookup's share is in it


def test_an_untied_or_frozen_embedding_stays_dense(tiny_model):
    untied = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, tie_word_embeddings=False)
    assert untied.get_output_embeddings().weight is not untied.get_input_embeddings().weight
    assert not sparse_tied_embedding_grad(untied) and not untied.get_input_embeddings().sparse
    frozen = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    frozen.get_input_embeddings().weight.requires_grad_(False)
    assert not sparse_tied_embedding_grad(frozen)


def test_no_gradient_is_held_after_an_update_and_adamw_is_fused(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    cfg = load_config(Config, None, ["optim.lr=1e-3"])
    opt, sched = make_optimizer(model, cfg.optim, 10)
    assert opt.defaults["fused"] is True  # CPU parameters: the fused kernel, no parameter-sized temporaries
    before = [p.detach().clone() for p in model.parameters()]
    ro = [Rollout("p", i, p, r, [], "x") for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES))]
    res = gspo_update(model, opt, sched, POLICY_LOSSES.get("gspo").bind({}), ro, torch.tensor([1.0, -1.0, 0.5]),
                      0, 2, 100.0, generator=torch.Generator().manual_seed(0))
    assert res.applied == 2
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))  # it did step
    assert all(p.grad is None for p in model.parameters())  # nothing kept through the next rollout
