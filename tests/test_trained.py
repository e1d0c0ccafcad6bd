"""``load_trained_ensembles`` rebuilds a run's kept members from its model files alone."""

from __future__ import annotations

import json
import runpy
import types
from pathlib import Path

import pytest
import torch
from huang2021.data.splits import load_splits
from huang2021.measures.clean import evaluate
from huang2021.training.checkpoints import load_trained_ensembles

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
train = types.SimpleNamespace(**runpy.run_path(str(EXAMPLES / "train.py")))


@pytest.mark.parametrize(("arch", "width"), [("vgg16", 4)])  # not the default: the file must record it
def test_loaded_ensembles_reproduce_the_runs_test_accuracy(tmp_path, arch, width):
    flags = ["--epochs", "1", "--max-batches", "2", "--methods", "baseline,pdd", "--arch", arch, "--width", str(width)]
    train.main(["--run-dir", str(tmp_path), "--members", "2", *flags])
    results = json.loads((tmp_path / "results.json").read_text())

    ensembles = load_trained_ensembles(tmp_path)
    assert sorted(ensembles) == ["baseline", "pdd"]
    test = load_splits("digits", tmp_path, seed=0, device=torch.device("cpu")).test
    for name, members in ensembles.items():
        assert len(members) == 2 and not members.training
        assert evaluate(members, test, 500).accuracy == results["methods"][name]["test_accuracy"]


def test_a_directory_without_models_is_refused(tmp_path):
    with pytest.raises(ValueError, match="config.json"):
        load_trained_ensembles(tmp_path)
    train.main(["--epochs", "1", "--max-batches", "1", "--members", "2", "--methods", "baseline,pdd", "--run-dir", str(tmp_path / "run"), "--stop-after-epochs", "1"])
    with pytest.raises(ValueError, match="model-pdd.pt.*--resume"):
        load_trained_ensembles(tmp_path / "run")
