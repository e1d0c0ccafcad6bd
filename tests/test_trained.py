"""``load_trained_ensembles`` rebuilds a run's kept members from its model files alone."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from ed_examples.data import load_splits
from ed_examples.evaluation import evaluate
from ed_examples.trained import load_trained_ensembles

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
_spec = importlib.util.spec_from_file_location("examples_train", EXAMPLES / "train.py")
train = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train)


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
