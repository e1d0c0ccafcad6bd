"""``torchrun --nproc_per_node 2 examples/train.py`` on CPU with gloo: DDP keeps the ranks' members
identical, PDD's priority counts agree on the ranks and count every rank's samples, rank 0 alone
writes the run, and ``--resume`` continues a distributed run exactly."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huang2021.training.checkpoints import load_trained_ensembles
from huang2021.training.distributed import state_digest

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--epochs", "2", "--max-batches", "2", "--width", "8", "--methods", "pdd+deg"]
STEPS = 2 * 2
"""Optimiser steps of a run with FLAGS: 2 epochs of 2 global batches of 64 images, 32 per rank."""


def torchrun(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(ROOT / "examples" / "train.py"), *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def rank_digests(output: str) -> list[str]:
    return re.findall(r"all 2 ranks hold the same kept members \(sha256 ([0-9a-f]{64})\)", output)


def rank_priority_counts(output: str) -> torch.Tensor:
    """The PDD priority counts ``[K, M]`` that the run checked equal on both ranks (it stops with an error otherwise)."""
    (counts,) = re.findall(r"all 2 ranks hold the same PDD priority counts \(member x interval\): (\[.*\])", output)
    return torch.tensor(json.loads(counts))


def checkpoint_priority_counts(run_dir: Path) -> torch.Tensor:
    return torch.load(run_dir / "checkpoint-pdd+deg.pt", weights_only=True)["ensemble"]["pdd.priority_counts"]


@pytest.mark.distributed
def test_two_ranks_train_identical_members_and_resume_exactly(tmp_path):
    whole = torchrun("--run-dir", str(tmp_path / "whole"), *FLAGS)
    (digest,) = rank_digests(whole)  # checked equal on both ranks by the run itself
    assert state_digest(load_trained_ensembles(tmp_path / "whole")["pdd+deg"]) == digest
    # Per-sample statistics: each rank counts its own 32 samples per step and the library sums the
    # ranks' counts, so each member's counts add up to every sample of the global batches.
    counts = rank_priority_counts(whole)
    assert counts.sum(dim=1).tolist() == [STEPS * 64] * 3
    assert torch.equal(counts, checkpoint_priority_counts(tmp_path / "whole"))
    records = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in records] == [1, 2]  # written once, by rank 0
    assert sorted(p.name for p in (tmp_path / "whole").iterdir()) == [
        "checkpoint-pdd+deg.pt", "config.json", "metrics.jsonl", "model-pdd+deg.pt", "results.json",
    ]

    split = tmp_path / "split"
    assert rank_digests(torchrun("--run-dir", str(split), *FLAGS, "--stop-after-epochs", "1")) == []
    resumed_output = torchrun("--resume", str(split))
    assert rank_digests(resumed_output) == [digest]
    assert torch.equal(rank_priority_counts(resumed_output), counts)
    resumed = [json.loads(line) for line in (split / "metrics.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in resumed] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in records
    ]


@pytest.mark.distributed
def test_batch_statistics_count_each_global_batch_once_on_every_rank(tmp_path):
    """--pdd-statistics batch: the library all-reduces range and histogram, so both ranks pick the
    same priority intervals once per global batch."""
    output = torchrun("--run-dir", str(tmp_path), *FLAGS, "--pdd-statistics", "batch")
    counts = rank_priority_counts(output)
    assert counts.sum(dim=1).tolist() == [STEPS] * 3
    assert torch.equal(counts, checkpoint_priority_counts(tmp_path))


@pytest.mark.parametrize("world_size", ["1", "2"])
def test_a_rank_process_ends_flushed_without_finalizing(world_size):
    """Under torchrun (WORLD_SIZE > 1) a rank ends with exit code 0, its unterminated output
    flushed, and no interpreter finalization (an atexit handler does not run), since gloo's
    worker threads abort a finalizing process; a single process returns and finalizes."""
    program = (
        "import atexit, sys\n"
        "from huang2021.training.distributed import exit_rank_process\n"
        "atexit.register(lambda: print('finalized'))\n"
        "print('results', end='')\n"
        "exit_rank_process()\n"
        "print(' returned')\n"
    )
    env = {**os.environ, "WORLD_SIZE": world_size,
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "examples"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ("results returned\nfinalized\n" if world_size == "1" else "results")
