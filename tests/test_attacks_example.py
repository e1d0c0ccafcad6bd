"""``examples/robustness_check.py``: short, public API alone, and it prints what it says."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "robustness_check.py"
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models


def test_the_example_is_short_and_uses_the_public_api_alone():
    source = EXAMPLE.read_text()
    assert len(source.splitlines()) < 100
    assert "huang2021" not in source and "from ensemble_diversity.attacks import evaluate_robustness" in source


def test_the_example_prints_each_ensembles_worst_case(capsys):
    accuracy = runpy.run_path(str(EXAMPLE))["main"](["--train-steps", "150", "--attack-steps", "5", "--limit", "60", "--eps", "0.05", "0.2"])
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in (out[0], out[4])] == ["baseline", "pdd+deg"]
    assert out[1].split() == ["eps", "pgd", "+pgd-probs", "+mora", "+apgd-ce", "+apgd-dlr", "worst", "case"]
    for name in ("baseline", "pdd+deg"):
        clean, small, large = accuracy[name]
        assert clean > 0.7 and clean >= small >= large and large < clean - 0.2  # eps 0.2 breaks much of digits
        row = out[(0 if name == "baseline" else 4) + 3].split()
        assert row[0] == "0.2" and float(row[-1]) == pytest.approx(100 * large, abs=0.06)
        assert [float(v) for v in row[1:]] == sorted((float(v) for v in row[1:]), reverse=True)  # each attack only lowers it
