"""The benchmark commands run and write their JSON (no timing is asserted)."""

from __future__ import annotations

import json
import math
import os
import runpy
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny sizes: threads would only wait for each other


def load(name: str) -> types.SimpleNamespace:
    """The globals of the script ``benchmarks/<name>.py`` (``machine`` and ``huang2021`` found through pytest's pythonpath)."""
    return types.SimpleNamespace(**runpy.run_path(str(BENCHMARKS / f"{name}.py")))


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
    # Batch 8: the 1/4-batch step's parts (2 and 6 images) each need 2 for BatchNorm in training mode.
    result, rows = run_train_step(tmp_path, ["--torchvision", "--batch-size", "8", "--rounds", "2", "--profile", "3"])
    assert result["settings"]["steps"] == module.USER_STEPS
    assert list(rows) == list(module.USER_STEPS)
    for row in rows.values():
        assert len(row["profile"]) == 3 and all(0 < op["share"] <= 1 for op in row["profile"])
    # The PDD rows ran every step through the ensemble's PDD: one tally per member and sample
    # in each of the 2 + 1 steps (the rounds, the profiled step).
    for name in ("pdd", "pdd+deg", "pdd+deg 1/4 batch"):
        assert rows[name]["priority_tallies"] == 2 * 8 * 3
    # K = 2: the penalty is the one pair's cosine (GAL's log-sum-exp of one pair is that cosine too).
    for name in ("deg", "pdd+deg", "pdd+deg 1/4 batch", "gal"):
        assert math.isfinite(rows[name]["last_penalty"]) and abs(rows[name]["last_penalty"]) <= 1
    assert set(rows) >= {"baseline", "adp", "pdd", "deg", "pdd+deg", "gal"}  # every method of the paper's comparison
    assert "priority_tallies" not in rows["deg"] and "last_penalty" not in rows["pdd"]


def test_train_step_benchmark_refuses_bad_flags(capsys):
    module = load("train_step")
    bad = (
        (["--methods", "deg"], "--methods"),
        (["--members", "1"], "--members"),
        (["--rounds", "0"], "--rounds"),
        (["--profile", "-1"], "--profile"),
        (["--torchvision", "--methods", "baseline,deg vmap"], "--methods"),
        (["--torchvision", "--width", "8"], "--torchvision"),
        (["--torchvision", "--compile", "aot_eager"], "--torchvision"),
        (["--methods", "baseline,pdd compiled"], "--methods"),  # the compiled steps need --compile
    )
    for argv, flag in bad:
        with pytest.raises(SystemExit):
            module.main(argv)
        assert flag in capsys.readouterr().err


def gpu_script(*argv: str, python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    """``bash benchmarks/gpu.sh ARGV`` with this interpreter (or ``python``), its output captured."""
    env = {**os.environ, "PYTHON": python, "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", str(BENCHMARKS / "gpu.sh"), *argv], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_gpu_script_cpu_smoke_runs_every_stage_and_the_tables_command_reads_them(tmp_path):
    run = gpu_script("--cpu-smoke", "--out", str(tmp_path))
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    record = json.loads((tmp_path / "stages.json").read_text())
    stages = ["cuda-tests", "pdd-op", "steps-batch8", "user-steps-batch8", "user-steps-batch16", "steps-batch16"]
    assert [stage["stage"] for stage in record["stages"]] == stages
    assert {stage["status"] for stage in record["stages"]} == {"passed"}
    # Both ways of marking CUDA tests are found: per test (test_pdd.py) and per module (pytestmark).
    assert {"tests/test_pdd.py", "tests/test_attacks_cuda.py"} <= set(record["stages"][0]["command"].split())
    assert record["benchmark"] == "gpu.sh" and record["torch"] and record["budget_seconds"] == 400
    written = {path.name for path in tmp_path.iterdir()}
    benchmarks = {"pdd_op.json", "train_step-batch8.json", "train_step-batch16.json"}
    benchmarks |= {"train_step-torchvision-batch8.json", "train_step-torchvision-batch16.json"}
    # At most 8 files: what the device tool brings back from $OUT.
    assert written == benchmarks | {"stages.json", "gpu.log"}
    steps = json.loads((tmp_path / "train_step-batch8.json").read_text())
    assert set(steps["results"][0]["rows"]) >= {"baseline compiled", "pdd compiled", "deg vmap", "deg bf16", "gal"}
    assert steps["settings"]["compile_backend"] == "aot_eager"
    # The command docs/performance.md gives, on this output; gpu.sh printed the same tables last.
    tables = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_tables.py"), str(tmp_path)], capture_output=True, text=True, check=True).stdout
    assert tables in run.stdout and tables in (tmp_path / "gpu.log").read_text()
    for name in benchmarks | {"stages.json"}:
        assert f"(`{name}`)" in tables
    assert "| pdd compiled |" in tables and "| steps-batch16 | passed |" in tables


@pytest.mark.slow
def test_gpu_script_skips_the_stages_its_budget_leaves_no_time_for(tmp_path):
    run = gpu_script("--cpu-smoke", "--budget", "0", "--only", "pdd-op,steps-batch16", "--out", str(tmp_path))
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    record = json.loads((tmp_path / "stages.json").read_text())
    assert [(stage["stage"], stage["status"]) for stage in record["stages"]] == [("pdd-op", "skipped"), ("steps-batch16", "skipped")]
    assert "budget" in record["stages"][0]["note"]
    assert {path.name for path in tmp_path.iterdir()} == {"stages.json", "gpu.log"}


@pytest.mark.slow
def test_gpu_script_goes_on_after_a_failed_stage_and_exits_non_zero(tmp_path):
    # An interpreter that fails the tests and the PDD op benchmark (exit status 3), and runs the rest.
    python = tmp_path / "python"
    python.write_text(f'#!/usr/bin/env bash\ncase "$1 $2" in "-m pytest"|"benchmarks/pdd_op.py "*) exit 3;; esac\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    out = tmp_path / "out"
    run = gpu_script("--cpu-smoke", "--only", "cuda-tests,pdd-op", "--out", str(out), python=str(python))
    assert run.returncode == 1, run.stdout[-4000:] + run.stderr[-4000:]
    record = json.loads((out / "stages.json").read_text())
    assert [(stage["stage"], stage["status"], stage["note"]) for stage in record["stages"]] == [
        ("cuda-tests", "failed", "exit status 3"),
        ("pdd-op", "failed", "exit status 3"),
    ]
    assert "SOME STAGES FAILED" in run.stdout and "| pdd-op | failed |" in run.stdout


def test_gpu_script_refuses_bad_arguments_and_a_machine_without_cuda(tmp_path):
    out = tmp_path / "out"
    bad = (
        (["--cpu-smoke", "--budget", "soon"], "--budget"),
        (["--cpu-smoke", "--only", "pdd-op,benchmark"], "--only"),
        (["--cpu-smoke", "--gpus", "2"], "--gpus"),
    )
    if shutil.which("nvidia-smi") is None:
        bad += (([], "no CUDA device"),)
    for argv, message in bad:
        run = gpu_script(*argv, "--out", str(out))
        assert run.returncode == 2 and message in run.stdout, run.stdout + run.stderr
        assert not out.exists()
