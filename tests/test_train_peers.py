"""The peer methods ``trs`` and ``dverge`` in ``examples/train.py``: they train for K = 3 and 5 and
``--arch resnet18``, DVERGE starts from the run's trained baseline, ``--resume`` continues them
exactly, a diverging peer stops cleanly, and the run's thread count is stored and set again."""

from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from huang2021.members import build_members
from huang2021.training import loop
from huang2021.training.methods import METHODS

from ensemble_diversity import Ensemble

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
train = types.SimpleNamespace(**runpy.run_path(str(EXAMPLES / "train.py")))

FAST = ["--max-batches", "2", "--width", "16", "--robust-eps"]


def run(run_dir: Path, *flags: str):
    return train.main(["--run-dir", str(run_dir), *FAST, *flags])


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def first_states(monkeypatch) -> dict[str, dict[str, torch.Tensor]]:
    """Each method's members as its first training step sees them, and the peer settings that step gets."""
    states: dict[str, dict[str, torch.Tensor]] = {}
    objective = loop.training_objective
    names = {method: name for name, method in METHODS.items()}

    def recorded(method, model, *args, **kwargs):
        name = names[method]
        if name not in states:
            states[name] = {key: value.clone() for key, value in model.ensemble.members.state_dict().items()}
            states[name + ":peer"] = kwargs.get("peer")
        return objective(method, model, *args, **kwargs)

    monkeypatch.setattr(loop, "training_objective", recorded)
    return states


@pytest.mark.parametrize("members", ["3", "5"])
def test_trs_and_dverge_train_and_compare(tmp_path, members):
    results = run(tmp_path, "--epochs", "1", "--members", members, "--methods", "trs,dverge")
    records = lines(tmp_path / "metrics.jsonl")
    assert [r["method"] for r in records] == ["trs", "dverge"]
    trs, dverge = records
    # TRS: the weighted similarity (in [0, 10]) plus the smoothness term, both >= 0.
    assert trs["penalty"] > 0 and dverge["penalty"] == 0.0
    assert all(r["loss"] > 0 for r in records)
    for name in ("trs", "dverge"):
        assert 0.0 <= results["methods"][name]["test_accuracy"] <= 1.0
        saved = torch.load(tmp_path / f"model-{name}.pt", weights_only=True)
        ensemble = Ensemble(build_members(int(members), 16, 10))
        ensemble.load_state_dict(saved["ensemble"])
        assert ensemble.eval()(torch.rand(2, 1, 8, 8)).shape == (2, 10)


def test_dverge_starts_from_the_runs_trained_baseline_and_scratch_does_not(tmp_path, monkeypatch):
    states = first_states(monkeypatch)
    run(tmp_path / "a", "--epochs", "1", "--methods", "baseline,dverge")
    kept = torch.load(tmp_path / "a" / "model-baseline.pt", weights_only=True)["ensemble"]
    assert all(torch.equal(states["dverge"][key], kept[f"members.{key}"]) for key in states["dverge"])
    assert not all(torch.equal(states["dverge"][key], states["baseline"][key]) for key in states["dverge"])

    states.clear()
    run(tmp_path / "b", "--epochs", "1", "--methods", "baseline,dverge", "--dverge-start", "scratch")
    assert all(torch.equal(states["dverge"][key], states["baseline"][key]) for key in states["dverge"])

    states.clear()
    run(tmp_path / "c", "--epochs", "1", "--methods", "dverge,baseline")  # no baseline trained before it
    assert all(torch.equal(states["dverge"][key], states["baseline"][key]) for key in states["dverge"])


def test_peer_settings_follow_the_epoch(tmp_path, monkeypatch):
    steps = []
    objective = loop.training_objective

    def recorded(method, model, *args, **kwargs):
        if method.peer is not None:
            steps.append((method.peer, kwargs["peer"]))
        return objective(method, model, *args, **kwargs)

    monkeypatch.setattr(loop, "training_objective", recorded)
    run(tmp_path, "--epochs", "2", "--max-batches", "1", "--methods", "trs,dverge", "--trs-eps", "0.1", "0.3", "--dverge-layer", "random")
    trs = [peer.trs_eps for name, peer in steps if name == "trs"]
    assert trs == pytest.approx([0.1, 0.2])  # the official ramp: epoch counted from 0
    layers = [peer.dverge_layer for name, peer in steps if name == "dverge"]
    candidates = loop.distillation_layers(Ensemble(build_members(3, 16, 10)))
    assert candidates[-2:] == [None, "head"] and all(name.startswith("features.") for name in candidates[:-2])
    assert len(layers) == 2 and all(layer in candidates for layer in layers)


def test_resume_continues_the_peers_exactly(tmp_path):
    flags = ["--epochs", "2", "--methods", "baseline,trs,dverge"]
    run(tmp_path / "whole", *flags)
    split = tmp_path / "split"
    assert run(split, *flags, "--stop-after-epochs", "3") is None  # baseline, then trs's first epoch
    assert train.main(["--resume", str(split), "--stop-after-epochs", "2"]) is None  # trs's second, dverge's first
    train.main(["--resume", str(split)])
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in lines(tmp_path / "whole" / "metrics.jsonl")]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in lines(split / "metrics.jsonl")] == strip
    for name in ("trs", "dverge"):
        a = torch.load(tmp_path / "whole" / f"model-{name}.pt", weights_only=True)["ensemble"]
        b = torch.load(split / f"model-{name}.pt", weights_only=True)["ensemble"]
        assert all(torch.equal(a[key], b[key]) for key in a)


def test_a_diverging_peer_stops_and_the_others_train(tmp_path, capsys):
    with pytest.raises(SystemExit, match="diverged: trs"):
        run(tmp_path, "--epochs", "1", "--methods", "trs,dverge", "--trs-smoothness", "1e30", "--lr", "10")
    out = capsys.readouterr().out
    assert "trs diverged in epoch 1, step " in out and "--trs-smoothness 1e+30" in out
    assert (tmp_path / "model-dverge.pt").exists() and not (tmp_path / "results.json").exists()


def test_resnet18_members_train_with_every_dverge_layer_setting(tmp_path):
    for layer in ("features", "random", "features.3.bn2"):
        run(tmp_path / layer, "--epochs", "1", "--max-batches", "1", "--arch", "resnet18", "--width", "2", "--methods", "trs,dverge", "--dverge-layer", layer)
        assert [r["method"] for r in lines(tmp_path / layer / "metrics.jsonl")] == ["trs", "dverge"]


def test_the_thread_count_is_stored_and_set_again_on_resume(tmp_path):
    before = torch.get_num_threads()
    try:
        assert run(tmp_path, "--epochs", "2", "--methods", "baseline", "--threads", "1", "--stop-after-epochs", "1") is None
        assert json.loads((tmp_path / "config.json").read_text())["flags"]["threads"] == 1
        torch.set_num_threads(2)
        train.main(["--resume", str(tmp_path)])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    run(tmp_path / "default", "--epochs", "1", "--methods", "baseline")
    assert json.loads((tmp_path / "default" / "config.json").read_text())["flags"]["threads"] == torch.get_num_threads()


@pytest.mark.parametrize(
    ("flags", "named"),
    [(["--trs-eps", "0.2", "0.1"], "--trs-eps"), (["--dverge-eps", "0"], "--dverge-eps"), (["--trs-steps", "0"], "--trs-steps"), (["--threads", "0"], "--threads")],
)
def test_bad_peer_flags_are_refused_naming_the_flag(tmp_path, capsys, flags, named):
    with pytest.raises(SystemExit):
        run(tmp_path, "--methods", "trs", *flags)
    assert named in capsys.readouterr().err


@pytest.mark.distributed
def test_two_ranks_train_identical_peer_members(tmp_path):
    """Under torchrun the peers' passes bypass DDP's wrapper; the loop's own gradient averaging keeps the ranks' members equal."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), os.environ.get("PYTHONPATH", "")])}
    flags = ["--epochs", "1", "--max-batches", "2", "--width", "8", "--methods", "baseline,trs,dverge", "--robust-eps"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(EXAMPLES / "train.py")]
    done = subprocess.run([*command, "--run-dir", str(tmp_path), *flags], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("baseline", "trs", "dverge"):
        assert re.search(rf"{name}: all 2 ranks hold the same kept members \(sha256 [0-9a-f]{{64}}\)", done.stdout), name
    assert "dverge: starting from this run's baseline" in done.stdout


def test_the_peer_cost_table_quotes_the_committed_benchmarks():
    """docs/performance.md's TRS and DVERGE ratios are the committed JSON's, rounded."""
    root = Path(__file__).resolve().parents[1]
    text = (root / "docs" / "performance.md").read_text()
    section = text[text.index("## TRS and DVERGE: their cost") : text.index("## The PDD op alone")]
    cpu, gpu = section.split("**On an H200**")

    def rows_of(table: str) -> dict[str, str]:
        return {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}

    rows = rows_of(cpu)
    for name, column in (("train_step-peers.json", 2), ("train_step-torchvision-peers.json", 4)):
        result = json.loads((root / "benchmarks" / "results" / name).read_text())
        for group in result["results"]:
            for step in ("deg", "trs", "dverge"):
                ratio = f"{group['rows'][step]['ratio_to_baseline']:.2f}"
                label = step if group["members"] == 3 else f"K=5: {step}"
                line = rows.get(label) or rows["K=5: baseline / deg"]
                assert ratio in line.split("|")[column], (name, label, ratio)
    # The H200 table: K = 3 and K = 5 side by side.
    rows = rows_of(gpu)
    result = json.loads((root / "benchmarks" / "results" / "gpu" / "train_step-torchvision-peers-batch64.json").read_text())
    for group in result["results"]:
        column = {3: 2, 5: 3}[group["members"]]
        for step in ("deg", "pdd+deg", "trs", "dverge"):
            ratio = f"{group['rows'][step]['ratio_to_baseline']:.2f}"
            assert ratio == rows[step].split("|")[column].strip(), ("H200", group["members"], step, ratio)


def test_the_preliminary_smoke_table_quotes_the_committed_runs():
    """docs/evaluation.md's preliminary TRS/DVERGE table: each mean ± std recomputed from the runs' committed results.json."""
    root = Path(__file__).resolve().parents[1]
    runs = sorted((root / "docs" / "digits-report" / "peers-smoke").glob("seed*/results.json"))
    assert len(runs) >= 1
    results = [json.loads(path.read_text())["methods"] for path in runs]
    text = (root / "docs" / "evaluation.md").read_text()
    section = text[text.index("## Earlier: TRS and DVERGE") :]
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]] for line in section.splitlines() if line.startswith("| ")}

    def shown(values: list[float]) -> str:
        mean = sum(values) / len(values)
        if len(values) == 1:
            return f"{mean:.2f}"
        std = (sum((value - mean) ** 2 for value in values) / (len(values) - 1)) ** 0.5
        return f"{mean:.2f} ± {std:.2f}"

    for name in ("baseline", "trs", "dverge"):
        clean = [100 * methods[name]["test_accuracy"] for methods in results]
        robust = [[100 * methods[name]["robust_accuracy"][eps] for methods in results] for eps in ("0.05", "0.1")]
        assert rows[name][:3] == [shown(clean), shown(robust[0]), shown(robust[1])], name
