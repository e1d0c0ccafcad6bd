"""Issue 20: an Ensemble trained with DistributedDataParallel through the library's own
``EnsembleMembers``, and torch.compile-wrapped ensembles in the penalties.

Two CPU processes on the gloo backend, a ``file://`` rendezvous: each rank trains on its own
shard with its own PDD masks, DEG and GAL steps through ``deg_penalty`` / ``gal_penalty`` of
``DistributedDataParallel(EnsembleMembers(ensemble))``. The members must stay equal on both
ranks and PDD's priority counts must be the global batch's. A control run passes the bare
``Ensemble`` (what the old hint led to): its ranks drift apart, so the check can fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ensemble_diversity import Ensemble, EnsembleMembers, PriorityDiversifiedDropout, deg_penalty, gal_penalty

WORLD_SIZE = 2
K = 3
LOCAL_BATCH = 4
STEPS = 3


def members() -> list[nn.Module]:
    torch.manual_seed(0)  # the same initial members on every rank
    return [nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4)) for _ in range(K)]


def shard(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 * step + rank)  # each rank its own samples
    return torch.randn(LOCAL_BATCH, 6, generator=generator) * (1 + rank), torch.randint(0, 4, (LOCAL_BATCH,), generator=generator)


def worker(rank: int, init_file: str, out_dir: str, wrapped: bool) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        ensemble = Ensemble(members(), pdd=PriorityDiversifiedDropout(K)).train()
        train_model: nn.Module = DistributedDataParallel(EnsembleMembers(ensemble)) if wrapped else ensemble
        refused = ""
        try:
            deg_penalty(DistributedDataParallel(ensemble), *shard(rank, 0))
        except TypeError as error:
            refused = str(error)
        torch.manual_seed(1000 + rank)  # each rank its own dropout masks
        optimizer = torch.optim.SGD(ensemble.parameters(), lr=0.1)
        samples = 0
        for step in range(STEPS):
            x, y = shard(rank, step)
            # DEG on all samples, GAL, then DEG on half of them (two forwards through DDP per step)
            penalty, fraction = [(deg_penalty, 1.0), (gal_penalty, 1.0), (deg_penalty, 0.5)][step]
            out = penalty(train_model, x, y, penalty_fraction=fraction)
            optimizer.zero_grad()
            (out.losses.mean() + 0.1 * out.penalty).backward()
            optimizer.step()
            samples += x.shape[0]
        torch.save(
            {
                "parameters": [p.detach().clone() for p in ensemble.parameters()],
                "counts": ensemble.pdd.priority_counts.clone(),
                "local_samples": samples,
                "refused": refused,
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def run(tmp_path: Path, wrapped: bool) -> list[dict]:
    tmp_path.mkdir()
    mp.spawn(worker, args=(str(tmp_path / "rendezvous"), str(tmp_path), wrapped), nprocs=WORLD_SIZE, join=True)
    return [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in range(WORLD_SIZE)]


@pytest.mark.distributed
def test_ddp_of_ensemble_members_keeps_ranks_equal_and_sums_pdd_counts(tmp_path):
    results = run(tmp_path / "wrapped", wrapped=True)
    initial = [p.detach() for p in Ensemble(members()).parameters()]
    for mine, theirs, start in zip(results[0]["parameters"], results[1]["parameters"], initial):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-6)
        assert not torch.equal(mine, start)  # the steps moved them
    # Per-sample statistics: one priority per sample and member; every rank holds the global tally.
    global_samples = sum(result["local_samples"] for result in results)
    for result in results:
        torch.testing.assert_close(result["counts"], results[0]["counts"])
        assert result["counts"].sum(dim=1).tolist() == [global_samples] * K
    assert "DistributedDataParallel(EnsembleMembers(ensemble))" in results[0]["refused"]


@pytest.mark.distributed
def test_control_without_ddp_the_ranks_drift_apart(tmp_path):
    """The bare Ensemble (no gradient sync): what the old hint led to. The check above can fail."""
    results = run(tmp_path / "bare", wrapped=False)
    assert any(not torch.allclose(a, b) for a, b in zip(results[0]["parameters"], results[1]["parameters"]))


# --- torch.compile ----------------------------------------------------------------------------


def test_compiled_ensembles_run_their_modules_eagerly_in_a_training_penalty():
    """torch.compile cannot double-backward; the penalty peels the compiled wrapper and gives
    exactly the eager penalty (same masks: same seed)."""
    ensemble = Ensemble(members(), pdd=PriorityDiversifiedDropout(K)).train()
    x, y = shard(0, 0)
    torch.manual_seed(3)
    eager = deg_penalty(ensemble, x, y)
    for wrapped in (torch.compile(ensemble), torch.compile(EnsembleMembers(ensemble))):
        torch.manual_seed(3)
        out = deg_penalty(wrapped, x, y)
        torch.testing.assert_close(out.penalty, eager.penalty)
        torch.testing.assert_close(out.logits, eager.logits)
        out.penalty.backward()


def test_the_old_harmful_hint_is_gone_and_single_modules_name_the_options():
    with pytest.raises(TypeError, match=r"an Ensemble, or EnsembleMembers\(ensemble\).*single Sequential") as info:
        deg_penalty(nn.Sequential(nn.Linear(6, 4)), *shard(0, 0))
    assert "pass a list" not in str(info.value)
    with pytest.raises(TypeError, match="`ensemble` to be an Ensemble"):
        EnsembleMembers(members())
