"""The library's APGD in the harness's strong protocol: ``examples/evaluate.py --attacks ...,apgd-ce,apgd-dlr``.

Each runs on the survivors of the strong attacks before it (its mask is the worst case so far),
breaks images of an undefended ensemble on its own, is named in the report, and is left out of
the default ``--attacks`` (whose last strong stage stays ART's AutoAttack).
"""

from __future__ import annotations

import runpy
import types
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("art")
pytest.importorskip("matplotlib")

from huang2021.evaluation.report import REPORT
from huang2021.run_dir import load_json

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
train = types.SimpleNamespace(**runpy.run_path(str(EXAMPLES / "train.py")))
evaluate = types.SimpleNamespace(**runpy.run_path(str(EXAMPLES / "evaluate.py")))
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py's

# Few iterations: the tests check the bookkeeping and that each attack bites, not its strength.
FAST = ["--limit", "12", "--threads", "1", "--strong-steps", "5", "--strong-restarts", "2", "--fgsm-eps", "0.05", "--bim-eps", "0.2", "--pgd-eps", "0.2"]  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """An undefended (baseline) ensemble that classifies digits well."""
    path = tmp_path_factory.mktemp("train")
    train.main(["--run-dir", str(path), "--methods", "baseline", "--epochs", "4", "--width", "16", "--lr", "0.1"])
    return path


def _results(out_dir: Path) -> dict:
    return load_json(out_dir / "results.json")["results"]


def _mask(result: dict) -> np.ndarray:
    return np.asarray(result["robust"], dtype=bool)


def test_library_apgd_runs_after_pgd_on_its_survivors_and_is_reported(run_dir, tmp_path):
    out_dir = tmp_path / "out"
    evaluate.main([str(run_dir), "--out-dir", str(out_dir), *FAST, "--attacks", "pgd-strong,apgd-ce,apgd-dlr"])
    results = _results(out_dir)
    clean = _mask(results["clean/none/-/0/baseline/seed-0"])
    for eps in (0.05, 0.2):
        chain = [results[f"strong/{attack}/inf/{eps}/baseline/seed-0"] for attack in ("pgd-strong", "apgd-ce", "apgd-dlr")]
        assert [r["survivors_of"] for r in chain] == [[], ["pgd-strong"], ["pgd-strong", "apgd-ce"]]
        masks = [clean, *(_mask(r) for r in chain)]
        # Cumulative: an image robust after an attack was robust before it (never above the earlier worst case).
        assert all((later <= earlier).all() for earlier, later in zip(masks, masks[1:])), eps
        assert all(r["labels"] == "true labels" and r["settings"]["strong_restarts"] == 2 for r in chain)
    assert results["strong/apgd-ce/inf/0.2/baseline/seed-0"]["model_output"] == "averaged logits"
    assert results["strong/apgd-dlr/inf/0.2/baseline/seed-0"]["model_output"] == "averaged logits (DLR loss)"
    report = (out_dir / REPORT).read_text()
    assert "| then APGD-CE-5x2 (strong) | 0.05 |" in report and "| then APGD-DLR-5x2 (strong) | 0.2 |" in report
    assert "the library's APGD (ensemble_diversity.attacks, not ART's) with 5 steps and 2 random start(s) on the cross-entropy" in report
    assert "the library's APGD with 5 steps and 2 random start(s) on the DLR loss of the averaged logits" in report


@pytest.mark.parametrize("attack", ["apgd-ce", "apgd-dlr"])
def test_library_apgd_alone_lowers_an_undefended_ensembles_accuracy(run_dir, tmp_path, attack):
    """Alone (``--attacks`` the one attack, so it runs on every clean-correct image) at eps 0.2 it breaks some."""
    evaluate.main([str(run_dir), "--out-dir", str(tmp_path / "out"), *FAST, "--attacks", attack])
    result = _results(tmp_path / "out")[f"strong/{attack}/inf/0.2/baseline/seed-0"]
    assert result["survivors_of"] == [] and result["clean_correct"] >= 9
    assert result["robust_correct"] < result["clean_correct"], result


def test_the_default_attacks_leave_out_the_library_apgd(run_dir):
    """ART's AutoAttack stays the default strong protocol's last stage (the committed reports' protocol)."""
    config, _, _ = evaluate.parse([str(run_dir)])
    attacks = config.run.attacks.split(",")
    assert "apgd-ce" not in attacks and "apgd-dlr" not in attacks
    assert [a for a in attacks if a in ("pgd-strong", "pgd-probs", "mora", "autoattack")] == ["pgd-strong", "pgd-probs", "mora", "autoattack"]
