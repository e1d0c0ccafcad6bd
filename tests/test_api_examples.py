"""The public-API examples beside the harness, ``examples/quickstart.py`` and
``examples/torchvision_ensemble.py``: each runs, trains, prints what it says, stays under 100
lines and imports nothing from the harness."""

from __future__ import annotations

import math
import runpy
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models


@pytest.mark.parametrize("name", ["quickstart.py", "torchvision_ensemble.py"])
def test_an_example_is_short_and_uses_the_public_api_alone(name):
    source = (EXAMPLES / name).read_text()
    assert len(source.splitlines()) < 100
    assert "huang2021" not in source and "from ensemble_diversity import" in source


def test_quickstart_trains_an_accurate_ensemble_with_pdd_and_deg(capsys):
    result = runpy.run_path(str(EXAMPLES / "quickstart.py"))["main"](["--steps", "100"])
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out[:2]] == ["step 50", "step 100"]
    assert out[2].startswith("test accuracy") and out[3].startswith("PDD priority counts")
    # 100 steps on digits: well above chance (10%), the members not all alike or all wrong.
    assert result["test_accuracy"] > 0.7 and 0.0 < result["ambiguity_entropy"] < 0.5
    assert math.isfinite(result["last_loss"])


def test_quickstart_refuses_a_bad_flag(capsys):
    with pytest.raises(SystemExit):
        runpy.run_path(str(EXAMPLES / "quickstart.py"))["main"](["--steps", "many"])
    assert "--steps" in capsys.readouterr().err


def test_torchvision_ensemble_trains_three_architectures_and_prints_the_metrics(capsys):
    pytest.importorskip("torchvision")
    metrics = runpy.run_path(str(EXAMPLES / "torchvision_ensemble.py"))["main"](["--steps", "2", "--batch-size", "4"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "members ['densenet121', 'shufflenet_v2_x1_0', 'shufflenet_v2_x0_5'], split before ('classifier', 'fc', 'fc')"
    assert [line.split(":")[0] for line in out[1:3]] == ["step 1", "step 2"]
    assert out[3].startswith("E (eq. 5)") and "mean L_F (eq. 6)" in out[3] and "mean gradient angle (Fig. 3)" in out[3]
    assert 0.0 <= metrics["ambiguity_entropy"] <= 1.0 and metrics["discrimination_score"] >= 0.0
    assert 0.0 < metrics["gradient_angle_degrees"] < 180.0
