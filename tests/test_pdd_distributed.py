"""PDD under torch.distributed: 2 CPU processes on the gloo backend, file:// rendezvous."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ensemble_diversity import PriorityDiversifiedDropout

WORLD_SIZE = 2


def global_batch() -> torch.Tensor:
    # the two ranks' halves differ in scale, so unsynced statistics would visibly differ
    generator = torch.Generator().manual_seed(0)
    features = torch.relu(torch.randn(3, 8, 32, generator=generator))
    features[:, 4:] *= 3
    return features


def _tally(rank: int) -> dict[str, torch.Tensor]:
    """Each PDD's priority counts after one training forward of this rank's half of the batch."""
    local = global_batch().chunk(WORLD_SIZE, dim=1)[rank]
    counts = {}
    for name, kwargs in {"per_sample": {}, "batch": {"statistics": "batch"}, "synced": {"statistics": "batch", "sync_statistics": True}}.items():
        pdd = PriorityDiversifiedDropout(3, **kwargs)
        pdd(local)
        counts[name] = pdd.priority_counts
    return counts


def worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        local = global_batch().chunk(WORLD_SIZE, dim=1)[rank]
        synced = PriorityDiversifiedDropout(3, statistics="batch", sync_statistics=True)
        unsynced = PriorityDiversifiedDropout(3, statistics="batch")
        per_sample = PriorityDiversifiedDropout(3)
        torch.save(
            {
                "synced": synced.priority_statistics(local),
                "unsynced": unsynced.keep_probabilities(local),
                "per_sample": per_sample.keep_probabilities(local),
                "forward": synced(local),
                "counts": _tally(rank),
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_synced_statistics_equal_those_of_the_global_batch(tmp_path):
    mp.spawn(worker, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    results = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in range(WORLD_SIZE)]

    features = global_batch()
    single = PriorityDiversifiedDropout(3, statistics="batch").priority_statistics(features)
    halves = single.keep_rate.chunk(WORLD_SIZE, dim=1)
    for rank, result in enumerate(results):
        # every rank sees the global histogram and priorities, and keeps units as one process would
        torch.testing.assert_close(result["synced"].member_counts, single.member_counts)
        torch.testing.assert_close(result["synced"].priority_interval, single.priority_interval)
        torch.testing.assert_close(result["synced"].keep_rate, halves[rank])
        assert result["forward"].shape == (3, 4, 32)
    # without syncing, each rank's batch histogram is its own, and differs from the global one
    assert not torch.allclose(results[0]["unsynced"], halves[0]) or not torch.allclose(results[1]["unsynced"], halves[1])
    # the priority tally is the global batch's on every rank: per-sample and per-rank-batch
    # tallies summed over the ranks, synced ones counted once
    halves_of_batch = global_batch().chunk(WORLD_SIZE, dim=1)
    for name, kwargs in {"per_sample": {}, "batch": {"statistics": "batch"}}.items():
        expected = torch.zeros(3, 10, dtype=torch.long)
        for half in halves_of_batch:
            pdd = PriorityDiversifiedDropout(3, **kwargs)
            pdd(half)
            expected += pdd.priority_counts
        for result in results:
            torch.testing.assert_close(result["counts"][name], expected)
    single_synced = PriorityDiversifiedDropout(3, statistics="batch")
    single_synced(features)
    for result in results:
        torch.testing.assert_close(result["counts"]["synced"], single_synced.priority_counts)
    # per-sample statistics need no syncing: they equal the single-process ones already
    torch.testing.assert_close(
        torch.cat([result["per_sample"] for result in results], dim=1),
        PriorityDiversifiedDropout(3).keep_probabilities(features),
    )
