"""The benchmark commands run and write their JSON (no timing is asserted)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_pdd_op_benchmark_writes_its_table(tmp_path):
    out = tmp_path / "pdd_op.json"
    result = load("pdd_op").main(["--repeats", "1", "--calls", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert [row["shape"] for row in result["rows"]] == [[3, 128, 512], [5, 128, 512]]
    for row in result["rows"]:
        assert set(row["seconds_per_call"]) == {"dropout", "pdd", "pdd compiled"}
        assert all(seconds > 0 for seconds in row["seconds_per_call"].values())


@pytest.mark.slow
def test_train_step_benchmark_times_every_step_and_writes_its_table(tmp_path):
    out = tmp_path / "train_step.json"
    module = load("train_step")
    argv = ["--small", "--width", "2", "--batch-size", "4", "--members", "2", "--rounds", "1", "--warmup", "0"]
    result = module.main([*argv, "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    (only,) = result["results"]
    assert only["members"] == 2
    assert list(only["rows"]) == list(module.PAPER_METHODS + module.FAST_PATHS)
    for row in only["rows"].values():
        assert row["seconds_per_step"] > 0 and row["peak_memory_bytes"] > 0
    assert only["rows"]["baseline"]["ratio_to_baseline"] == 1.0
    # The exact fast paths give plain DEG's penalty; double backprop saves more than a plain step.
    for name in ("deg vmap", "deg one pass per member"):
        assert only["rows"][name]["penalty_vs_deg"] < 1e-4
    assert only["rows"]["deg"]["memory_ratio_to_baseline"] > 1.0


def test_train_step_benchmark_refuses_bad_flags(capsys):
    module = load("train_step")
    for argv, flag in ((["--methods", "deg"], "--methods"), (["--members", "1"], "--members"), (["--rounds", "0"], "--rounds")):
        with pytest.raises(SystemExit):
            module.main(argv)
        assert flag in capsys.readouterr().err
