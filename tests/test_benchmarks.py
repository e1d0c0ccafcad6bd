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
