"""The pure parts of the streamed weight sync: bucket plan, packing, checksums, verification,
and a real send/receive over a gloo group (two ranks in threads of this process)."""

from __future__ import annotations

import threading

import pytest
import torch

from rollouts.weight_sync import (ALIGN, TensorSpec, WeightSyncError, checksum, client_store, layer_key, open_group,
                                  pack, plan_buckets, receive_buckets, send_buckets, server_store, tensor_specs,
                                  split_aliases, verify, views)


def _state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {"model.embed_tokens.weight": torch.randn(10, 8),
            "model.layers.0.self_attn.q_proj.weight": torch.randn(8, 8),
            "model.layers.0.mlp.up_proj.weight": torch.randn(16, 8),
            "model.layers.1.self_attn.q_proj.weight": torch.randn(8, 8),
            "model.layers.1.mlp.up_proj.weight": torch.randn(16, 8),
            "model.norm.weight": torch.randn(8),
            "step": torch.tensor([3], dtype=torch.long)}


def test_layer_key_is_the_outermost_index():
    assert layer_key("model.layers.3.mlp.experts.7.w1") == "model.layers.3"
    assert layer_key("model.norm.weight") == ""


def test_buckets_respect_the_limit_keep_layers_whole_and_keep_order():
    specs = tensor_specs(_state().items())
    layer = 8 * 8 * 4 + 16 * 8 * 4  # 768 bytes, already aligned
    plan = plan_buckets(specs, 2 * layer)
    assert [s.name for b in plan for s in b.tensors] == [s.name for s in specs]
    for b in plan:
        assert b.nbytes % ALIGN == 0 and all(s.offset % ALIGN == 0 for s in b.tensors)
        assert b.nbytes <= 2 * layer or len({layer_key(s.name) for s in b.tensors}) == 1
    for key in ("model.layers.0", "model.layers.1"):  # a layer never spans two buckets
        assert sum(any(layer_key(s.name) == key for s in b.tensors) for b in plan) == 1


def test_a_layer_bigger_than_the_limit_travels_alone():
    specs = [TensorSpec("a.0.w", "float32", (1000,)), TensorSpec("a.1.w", "float32", (4,))]
    plan = plan_buckets(specs, 256)
    assert [[s.name for s in b.tensors] for b in plan] == [["a.0.w"], ["a.1.w"]]
    assert plan[0].nbytes == 4000 + (-4000 % ALIGN)
    with pytest.raises(ValueError, match="positive"):
        plan_buckets(specs, 0)


def test_tied_aliases_travel_once_and_load_under_both_names():
    emb = torch.randn(4, 16)
    sd = {"embed.weight": emb, "layers.0.w": torch.randn(16), "lm_head.weight": emb, "zero": torch.empty(0),
          "zero2": torch.empty(0)}
    unique, aliases = split_aliases(sd)
    assert list(unique) == ["embed.weight", "layers.0.w", "zero", "zero2"]
    assert aliases == {"embed.weight": ["lm_head.weight"]}
    plan = plan_buckets(tensor_specs(unique.items()), 1 << 20)
    loaded: dict[str, torch.Tensor] = {}
    store = server_store("127.0.0.1", 2, 30)
    t = threading.Thread(target=lambda: receive_buckets(
        plan, open_group("gloo", client_store("127.0.0.1", store.port, 2, 30), 1, 2, 30),
        lambda items: loaded.update((k, v.clone()) for k, v in items), 30, aliases=aliases))
    t.start()
    send_buckets(unique.items(), plan, open_group("gloo", store, 0, 2, 30), 30)
    t.join(30)
    assert list(loaded) == ["embed.weight", "lm_head.weight", "layers.0.w", "zero", "zero2"]
    assert torch.equal(loaded["lm_head.weight"], emb)


def test_pack_and_views_round_trip_in_the_engine_dtype():
    sd = _state()
    specs = tensor_specs(sd.items(), "bfloat16")
    assert specs[0].dtype == "bfloat16" and specs[-1].dtype == "int64"  # integers keep their dtype
    (bucket,) = plan_buckets(specs, 1 << 20)
    buf = torch.empty(bucket.nbytes, dtype=torch.uint8)
    out = dict(views(bucket, pack(bucket, sd, buf)))
    for k, v in sd.items():
        assert torch.equal(out[k], v.to(out[k].dtype)), k


def test_checksum_sees_one_changed_byte_and_moved_chunks():
    buf = torch.randint(0, 255, (16 * ALIGN,), dtype=torch.uint8)
    base = checksum(buf)
    assert checksum(buf.clone()) == base
    flipped = buf.clone()
    flipped[77] ^= 1
    assert checksum(flipped) != base
    swapped = buf.view(8, -1).flip(0).reshape(-1)  # the 8 chunks in reverse order
    assert checksum(swapped) != base
    assert checksum(torch.zeros_like(buf)) != base


def test_verify_names_the_engine_that_differs_or_applied_less():
    exp = [(1, 2), (3, 4)]
    verify(exp, {"engine 0": [[1, 2], [3, 4]]})
    with pytest.raises(WeightSyncError, match=r"engine 1 loaded bucket\(s\) \[1\]"):
        verify(exp, {"engine 0": exp, "engine 1": [(1, 2), (3, 5)]})
    with pytest.raises(WeightSyncError, match="engine 0 applied 1 of 2 buckets"):
        verify(exp, {"engine 0": [(1, 2)]})


def _transfer(sd, plan, load):
    """Rank 0 sends `sd` in this thread, rank 1 receives with `load` in another: (sent, received) checksums."""
    store = server_store("127.0.0.1", 2, 30)
    got: dict[str, list] = {}

    def receiver():
        group = open_group("gloo", client_store("127.0.0.1", store.port, 2, 30), 1, 2, 30)
        got["sums"] = receive_buckets(plan, group, load, 30)

    t = threading.Thread(target=receiver)
    t.start()
    sent = send_buckets(sd.items(), plan, open_group("gloo", store, 0, 2, 30), 30)
    t.join(30)
    assert not t.is_alive()
    return sent, got["sums"]


def test_send_and_receive_over_gloo_load_every_bucket_and_checksums_agree():
    sd = _state()
    plan = plan_buckets(tensor_specs(sd.items()), 1024)
    assert len(plan) >= 3
    loaded: dict[str, torch.Tensor] = {}
    sent, got = _transfer(sd, plan, lambda items: loaded.update((k, v.clone()) for k, v in items))
    assert got == sent and len(sent) == len(plan)
    assert all(torch.equal(loaded[k], v) for k, v in sd.items())
    verify(sent, {"engine 0": got})


def test_a_loader_that_stops_early_is_a_partial_apply_and_nobody_hangs():
    sd = _state()
    plan = plan_buckets(tensor_specs(sd.items()), 1024)
    first = len(plan[0].tensors)

    def load_first_bucket_only(items):
        for _ in range(first + 1):  # asking for the next tensor marks bucket 0 as consumed
            next(items)

    sent, got = _transfer(sd, plan, load_first_bucket_only)
    assert len(got) == 1 and got[0] == sent[0]
    with pytest.raises(WeightSyncError, match=f"engine 3 applied 1 of {len(plan)} buckets"):
        verify(sent, {"engine 3": got})


def test_sender_rejects_tensors_out_of_plan_order():
    sd = _state()
    plan = plan_buckets(tensor_specs(sd.items()), 1 << 20)
    with pytest.raises(WeightSyncError, match="out of plan order"):
        send_buckets(reversed(list(sd.items())), plan, group=None, timeout_s=1)
