"""PiecewiseReduceScatter (posttrain/rl/fsdp_comm.py): gloo's reduce-scatter, piece by piece, same result."""

from __future__ import annotations

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from posttrain.rl.fsdp_comm import PiecewiseReduceScatter


def _port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, out: dict) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        shard = 1003  # not a multiple of the piece: the last piece is short
        x = torch.randn(2 * shard, generator=torch.Generator().manual_seed(rank))
        whole, pieces = torch.empty(shard), torch.empty(shard)
        dist.reduce_scatter_single(whole, x.clone(), op=dist.ReduceOp.SUM)
        comm = PiecewiseReduceScatter(piece_bytes=100 * 4)  # 100 elements: 11 pieces
        comm(output_tensor=pieces, input_tensor=x.clone(), group=dist.group.WORLD, op=dist.ReduceOp.SUM)
        expected = (torch.randn(2 * shard, generator=torch.Generator().manual_seed(0))
                    + torch.randn(2 * shard, generator=torch.Generator().manual_seed(1))).view(2, shard)[rank]
        out[rank] = (torch.equal(pieces, whole), float((pieces - expected).abs().max()))
    finally:
        dist.destroy_process_group()


def test_the_piecewise_reduce_scatter_gives_each_rank_the_whole_ones_result():
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_rank, args=(_port(), out), nprocs=2)
        results = dict(out)
    assert set(results) == {0, 1}
    for same, err in results.values():
        assert same and err < 1e-6
