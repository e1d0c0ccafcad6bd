"""The harness's training objective with ``--deg-fraction F`` (``huang2021/training/objective.py``): the
DEG/GAL penalty on the batch's first ceil(F * B) images equals the library's
``deg_penalty(..., penalty_fraction=F)`` / ``gal_penalty(...)``, F = 1 is the plain path, the flag is
checked and stored, and ``--resume`` continues such a run exactly."""

from __future__ import annotations

import copy
import json
import os
import runpy
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from huang2021.members import build_members
from huang2021.training.config import Weights
from huang2021.training.distributed import EnsembleForward
from huang2021.training.methods import METHODS
from huang2021.training.objective import penalised_samples, training_objective

from ensemble_diversity import Ensemble, PriorityDiversifiedDropout, deg_penalty, gal_penalty

ROOT = Path(__file__).resolve().parents[1]
train = types.SimpleNamespace(**runpy.run_path(str(ROOT / "examples" / "train.py")))
FAST = ["--max-batches", "2", "--width", "16", "--methods", "deg"]


def ensemble_pair(method: str) -> tuple[Ensemble, Ensemble]:
    """Two copies of one untrained ensemble in training mode (BatchNorm on batch statistics), with PDD for the PDD methods."""
    torch.manual_seed(0)
    pdd = PriorityDiversifiedDropout(3) if METHODS[method].pdd else None
    ensemble = Ensemble(build_members(3, 8, 10), pdd=pdd).train()
    return ensemble, copy.deepcopy(ensemble)


def batch(size: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(size, 1, 8, 8, generator=generator), torch.randint(0, 10, (size,), generator=generator)


@pytest.mark.parametrize("fraction", [0.25, 0.5, 1.0])
@pytest.mark.parametrize("method", ["deg", "pdd+deg", "gal"])
def test_deg_fraction_equals_the_librarys_sub_batch_penalty(method, fraction):
    """Same members, batch and RNG: the objective's penalty, loss, logits, parameter gradients and
    BatchNorm statistics are the library's ``penalty_fraction=F`` ones (eq. 4 with the CE mean)."""
    harness, library = ensemble_pair(method)
    images, labels = batch()
    weights = Weights(ce_reduction="mean", deg_fraction=fraction)
    torch.manual_seed(2)  # PDD's masks
    objective = training_objective(METHODS[method], EnsembleForward(harness), images, labels, weights)
    torch.manual_seed(2)
    penalty_of = gal_penalty if METHODS[method].gal else deg_penalty
    out = penalty_of(library, images, labels, penalty_fraction=fraction)
    weight = weights.gal_lambda if METHODS[method].gal else weights.deg_lambda
    expected = out.losses.mean() + weight * out.penalty

    torch.testing.assert_close(objective.penalty, out.penalty.detach())
    torch.testing.assert_close(objective.logits, out.logits.detach())
    torch.testing.assert_close(objective.loss, expected)
    assert objective.penalty != 0
    objective.loss.backward()
    expected.backward()
    for (name, ours), theirs in zip(harness.named_parameters(), library.parameters(), strict=True):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-5, atol=1e-7, msg=name)
    for ours, theirs in zip(harness.buffers(), library.buffers(), strict=True):
        torch.testing.assert_close(ours, theirs)


class CountingForward(EnsembleForward):
    """``EnsembleForward`` that records the shape of each input and its ``per_member``."""

    def __init__(self, ensemble: Ensemble) -> None:
        super().__init__(ensemble)
        self.calls: list[tuple[tuple[int, ...], bool]] = []

    def forward(self, x, *, per_member=False):
        self.calls.append((tuple(x.shape), per_member))
        return super().forward(x, per_member=per_member)


def test_deg_fraction_one_is_the_plain_path_and_a_fraction_splits_the_batch():
    """F = 1: one forward of per-member inputs over the whole batch, the path without the flag;
    F = 0.25 of 12 images: per-member inputs for the first 3, a plain forward for the other 9."""
    ensemble, _ = ensemble_pair("deg")
    images, labels = batch()
    plain = CountingForward(ensemble)
    default = training_objective(METHODS["deg"], plain, images, labels, Weights())
    whole = training_objective(METHODS["deg"], plain, images, labels, Weights(deg_fraction=1.0))
    assert plain.calls == [((3, 12, 1, 8, 8), True)] * 2
    torch.testing.assert_close(whole.loss, default.loss)
    torch.testing.assert_close(whole.penalty, default.penalty)

    split = CountingForward(ensemble)
    training_objective(METHODS["deg"], split, images, labels, Weights(deg_fraction=0.25))
    assert split.calls == [((3, 3, 1, 8, 8), True), ((9, 1, 8, 8), False)]
    # A step --deg-every leaves unpenalised is the plain forward whatever the fraction.
    skipped = CountingForward(ensemble)
    training_objective(METHODS["deg"], skipped, images, labels, Weights(deg_fraction=0.25), with_penalty=False)
    assert skipped.calls == [((12, 1, 8, 8), False)]


def test_penalised_samples_rounds_up_and_keeps_one():
    assert [penalised_samples(64, fraction) for fraction in (1.0, 0.5, 0.25, 0.125, 0.01)] == [64, 32, 16, 8, 1]
    assert penalised_samples(7, 0.25) == 2  # the last, shorter batch of an epoch: ceil(1.75)


@pytest.mark.parametrize("value", ["0", "1.5", "-0.25"])
def test_deg_fraction_outside_zero_one_is_refused(value, capsys):
    with pytest.raises(SystemExit):
        train.main(["--deg-fraction", value, *FAST])
    assert "Expected --deg-fraction to be in (0, 1]" in capsys.readouterr().err


def lines(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in path.read_text().splitlines()]


def test_a_sub_batch_run_stores_its_fraction_and_resumes_exactly(tmp_path, capsys):
    flags = [*FAST, "--epochs", "2", "--deg-fraction", "0.25"]
    whole = train.main(["--run-dir", str(tmp_path / "whole"), *flags])
    assert json.loads((tmp_path / "whole" / "config.json").read_text())["flags"]["deg_fraction"] == 0.25
    train.main(["--run-dir", str(tmp_path / "plain"), *FAST, "--epochs", "2"])
    assert lines(tmp_path / "whole" / "metrics.jsonl") != lines(tmp_path / "plain" / "metrics.jsonl")

    split = tmp_path / "split"
    assert train.main(["--run-dir", str(split), *flags, "--stop-after-epochs", "1"]) is None
    with pytest.raises(SystemExit):
        train.main(["--resume", str(split), "--deg-fraction", "0.5"])
    assert "--deg-fraction" in capsys.readouterr().err
    resumed = train.main(["--resume", str(split)])
    assert lines(split / "metrics.jsonl") == lines(tmp_path / "whole" / "metrics.jsonl")
    timeless = [{key: value for key, value in result["methods"]["deg"].items() if "seconds" not in key} for result in (whole, resumed)]
    assert timeless[0] == timeless[1]
    saved = [torch.load(run / "model-deg.pt", weights_only=True)["ensemble"] for run in (tmp_path / "whole", split)]
    for key, value in saved[0].items():
        assert torch.equal(value, saved[1][key]), key


@pytest.mark.slow
def test_train_step_benchmark_times_the_sub_batch_rows(tmp_path):
    """``deg sub-batch F`` in ``--methods`` gives one row per fraction, its first penalty beside plain DEG's."""
    script = types.SimpleNamespace(**runpy.run_path(str(ROOT / "benchmarks" / "train_step.py")))
    argv = ["--small", "--width", "2", "--batch-size", "8", "--rounds", "1", "--warmup", "0", "--members", "2"]
    methods = ["--methods", "baseline,deg,deg sub-batch F", "--deg-fraction", "0.25,1"]
    result = script.main([*argv, *methods, "--out", str(tmp_path / "train_step.json")])
    rows = result["results"][0]["rows"]
    assert list(rows) == ["baseline", "deg", "deg sub-batch 0.25", "deg sub-batch 1"]
    assert result["settings"]["deg_fractions"] == [0.25, 1.0]
    assert rows["deg sub-batch 1"]["penalty_vs_deg"] < 1e-6  # the whole batch: plain DEG
    assert 0 <= rows["deg sub-batch 0.25"]["penalty_vs_deg"] <= 1


@pytest.mark.distributed
def test_two_ranks_train_a_sub_batch_run_with_identical_members(tmp_path):
    """Under torchrun each rank penalises the first ceil(F * b) of its own b images; DDP keeps the
    members identical through the two forwards of a step."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(ROOT / "examples" / "train.py"),
        "--run-dir", str(tmp_path), "--epochs", "1", *FAST, "--width", "8", "--deg-fraction", "0.25",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all 2 ranks hold the same kept members" in done.stdout
