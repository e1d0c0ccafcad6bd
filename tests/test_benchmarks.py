"""The benchmark commands run and write their JSON (no timing is asserted)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny sizes: threads would only wait for each other


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


def run_train_step(tmp_path: Path, argv: list[str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``train_step.main(argv)`` at K = 2; checks what every run writes, returns (the result, K = 2's rows)."""
    out = tmp_path / "train_step.json"
    result = load("train_step").main([*argv, "--members", "2", "--warmup", "0", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    (only,) = result["results"]
    assert only["members"] == 2
    for row in only["rows"].values():
        assert row["seconds_per_step"] > 0 and row["peak_memory_bytes"] > 0
    assert only["rows"]["baseline"]["ratio_to_baseline"] == 1.0
    return result, only["rows"]


@pytest.mark.slow
def test_train_step_benchmark_times_every_step_and_writes_its_table(tmp_path):
    module = load("train_step")
    _, rows = run_train_step(tmp_path, ["--small", "--width", "2", "--batch-size", "4", "--rounds", "1"])
    assert list(rows) == list(module.PAPER_METHODS + module.FAST_PATHS)
    # The exact fast paths give plain DEG's penalty; double backprop saves more than a plain step.
    for name in ("deg vmap", "deg one pass per member"):
        assert rows[name]["penalty_vs_deg"] < 1e-4
    assert rows["deg"]["memory_ratio_to_baseline"] > 1.0


@pytest.mark.slow
def test_train_step_benchmark_times_the_users_torchvision_steps(tmp_path):
    module = load("train_step")
    result, rows = run_train_step(tmp_path, ["--torchvision", "--batch-size", "2", "--rounds", "2", "--profile", "3"])
    assert result["settings"]["steps"] == module.USER_STEPS
    assert list(rows) == list(module.USER_STEPS)
    for row in rows.values():
        assert len(row["profile"]) == 3 and all(0 < op["share"] <= 1 for op in row["profile"])
    # The PDD rows ran every step through the ensemble's PDD: one tally per member and sample
    # in each of the 2 + 1 steps (the rounds, the profiled step).
    for name in ("pdd", "pdd+deg"):
        assert rows[name]["priority_tallies"] == 2 * 2 * 3
    # K = 2: the penalty is the one pair's cosine.
    for name in ("deg", "pdd+deg"):
        assert math.isfinite(rows[name]["last_penalty"]) and abs(rows[name]["last_penalty"]) <= 1
    assert "priority_tallies" not in rows["deg"] and "last_penalty" not in rows["pdd"]


def test_train_step_benchmark_refuses_bad_flags(capsys):
    module = load("train_step")
    bad = (
        (["--methods", "deg"], "--methods"),
        (["--members", "1"], "--members"),
        (["--rounds", "0"], "--rounds"),
        (["--profile", "-1"], "--profile"),
        (["--torchvision", "--methods", "baseline,adp"], "--methods"),
        (["--torchvision", "--width", "8"], "--torchvision"),
    )
    for argv, flag in bad:
        with pytest.raises(SystemExit):
            module.main(argv)
        assert flag in capsys.readouterr().err
