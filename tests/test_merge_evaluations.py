"""``examples/merge_evaluations.py``: seeds evaluated in separate directories merge into the
evaluation of all seeds at once (same results, same report tables), and parts that do not
belong together are refused naming the argument."""

from __future__ import annotations

import json
import runpy
import types
from pathlib import Path

import pytest
import torch

pytest.importorskip("art")
pytest.importorskip("matplotlib")

from huang2021.evaluation.report import REPORT, _command
from huang2021.run_dir import load_json

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
train = types.SimpleNamespace(**runpy.run_path(str(EXAMPLES / "train.py")))
evaluate = types.SimpleNamespace(**runpy.run_path(str(EXAMPLES / "evaluate.py")))
merge = types.SimpleNamespace(**runpy.run_path(str(EXAMPLES / "merge_evaluations.py")))

FAST = ["--limit", "12", "--threads", "1", "--steps", "3", "--strong-steps", "3", "--strong-restarts", "1",
        "--fgsm-eps", "0.2", "--pgd-eps", "0.2", "--bim-eps", "0.2", "--attacks", "fgsm,pgd,pgd-strong,mora"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    """Seeds 0 and 1 of a baseline and a PDD ensemble, trained briefly."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    paths = []
    for seed in (0, 1):
        path = tmp_path_factory.mktemp(f"seed{seed}")
        train.main(["--run-dir", str(path), "--seed", str(seed), "--methods", "baseline,pdd", "--epochs", "2", "--width", "16", "--lr", "0.1", "--robust-eps"])
        paths.append(path)
    torch.set_num_threads(threads)
    return paths


@pytest.fixture(scope="module")
def evaluations(runs, tmp_path_factory) -> dict[str, Path]:
    """Each seed alone, both seeds at once, and the merge of the two alone."""
    root = tmp_path_factory.mktemp("eval")
    out = {"seed0": root / "seed0", "seed1": root / "seed1", "together": root / "together", "merged": root / "merged"}
    evaluate.main([str(runs[0]), "--out-dir", str(out["seed0"]), *FAST])
    evaluate.main([str(runs[1]), "--out-dir", str(out["seed1"]), *FAST])
    evaluate.main([str(runs[0]), str(runs[1]), "--out-dir", str(out["together"]), *FAST])
    merge.main([str(out["seed0"]), str(out["seed1"]), "--out-dir", str(out["merged"])])
    return out


def _without_timing(results: dict) -> dict:
    return {key: {field: value for field, value in result.items() if field != "seconds"} for key, result in results.items()}


def test_the_merge_holds_the_same_results_as_one_evaluation_of_all_seeds(evaluations):
    merged = load_json(evaluations["merged"] / "results.json")["results"]
    together = load_json(evaluations["together"] / "results.json")["results"]
    assert {result["train_seed"] for result in merged.values()} == {0, 1}
    assert _without_timing(merged) == _without_timing(together)
    assert (evaluations["merged"] / "results.csv").read_text().count("\n") == len(merged) + 1


def _tables(report: str) -> str:
    """The report after its provenance, without the "Time spent" section."""
    sections = report[report.index("## ") :].split("\n## ")
    return "\n## ".join(section for section in sections if not section.startswith("Time spent"))


def test_the_merged_report_has_the_tables_of_one_evaluation_and_each_parts_command(evaluations):
    merged = (evaluations["merged"] / REPORT).read_text()
    together = (evaluations["together"] / REPORT).read_text()
    # Everything after the provenance paragraph (the tables, with means over both seeds) agrees,
    # but for the wall times of separate runs.
    assert _tables(merged) == _tables(together)
    assert "Merged by `python examples/merge_evaluations.py` from 2 evaluations:" in merged
    assert merged.count("Command: `python examples/evaluate.py") == 2
    config = load_json(evaluations["merged"] / "config.json")
    assert [part["eval_dir"] for part in config["merged_from"]] == [str(evaluations["seed0"]), str(evaluations["seed1"])]
    assert len(config["flags"]["run_dirs"]) == 2


def test_the_provenance_shows_a_resume_that_changed_the_flags():
    first = ["runs/a", "--attacks", "pgd-strong"]
    added = ["runs/a", "--attacks", "fgsm,pgd-strong"]
    assert _command(first, []) == "Command: `python examples/evaluate.py runs/a --attacks pgd-strong`"
    assert _command(first, [first]).endswith("(resumed 1 times)")
    line = _command(first, [first, added])
    assert line.endswith("(resumed 2 times; as `python examples/evaluate.py runs/a --attacks fgsm,pgd-strong`)")


def test_merging_again_rewrites_the_earlier_merge(evaluations, tmp_path):
    # A merge of seed 0 alone with itself is refused elsewhere; here the earlier merge is rewritten with other parts.
    before = load_json(evaluations["merged"] / "results.json")["results"]
    copy = tmp_path / "seed1-copy"
    copy.mkdir()
    for name in ("config.json", "results.json", "results.csv"):
        (copy / name).write_bytes((evaluations["seed1"] / name).read_bytes())
    merge.main([str(evaluations["seed1"]), str(copy), "--out-dir", str(evaluations["merged"])])
    after = load_json(evaluations["merged"] / "results.json")["results"]
    assert {result["train_seed"] for result in after.values()} == {1} and len(after) < len(before)
    merge.main([str(evaluations["seed0"]), str(evaluations["seed1"]), "--out-dir", str(evaluations["merged"])])


def _error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit):
        merge.main(argv)
    return capsys.readouterr().err


def test_parts_that_do_not_belong_together_are_refused(runs, evaluations, tmp_path, capsys):
    other = tmp_path / "other"
    evaluate.main([str(runs[1]), "--out-dir", str(other), *FAST[:-1], "fgsm", "--strong-steps", "4"])
    error = _error(capsys, [str(evaluations["seed0"]), str(other), "--out-dir", str(tmp_path / "m")])
    assert "EVAL_DIR" in error and "strong_steps" in error
    # One result key, two contents.
    clash = tmp_path / "clash"
    clash.mkdir()
    for name in ("config.json", "results.csv"):
        (clash / name).write_bytes((evaluations["seed0"] / name).read_bytes())
    results = load_json(evaluations["seed0"] / "results.json")
    key = next(iter(results["results"]))
    results["results"][key]["robust_correct"] += 1
    (clash / "results.json").write_text(json.dumps(results))
    error = _error(capsys, [str(evaluations["seed0"]), str(clash), "--out-dir", str(tmp_path / "m2")])
    assert "EVAL_DIR" in error and key in error
    assert "EVAL_DIR" in _error(capsys, [str(evaluations["seed0"]), "--out-dir", str(tmp_path / "m3")])
    assert "EVAL_DIR" in _error(capsys, [str(evaluations["seed0"]), str(tmp_path), "--out-dir", str(tmp_path / "m4")])
    assert "EVAL_DIR" in _error(capsys, [str(evaluations["seed0"]), str(evaluations["merged"]), "--out-dir", str(tmp_path / "m5")])
    # An --out-dir holding an evaluation (not a merge) is not overwritten.
    assert "--out-dir" in _error(capsys, [str(evaluations["seed0"]), str(evaluations["seed1"]), "--out-dir", str(evaluations["together"])])


def test_parts_carrying_their_training_runs_get_the_training_table(runs, evaluations, tmp_path):
    """As examples/mnist_study.sh leaves them: each part holds its run's results.json and config.json."""
    parts = []
    for seed, run in enumerate(runs):
        part = tmp_path / f"part{seed}"
        part.mkdir()
        for name in ("config.json", "results.json"):
            (part / name).write_bytes((evaluations[f"seed{seed}"] / name).read_bytes())
        (part / "training.json").write_bytes((run / "results.json").read_bytes())
        (part / "training-config.json").write_bytes((run / "config.json").read_bytes())
        parts.append(part)
    merge.main([*map(str, parts), "--out-dir", str(tmp_path / "merged")])
    report = (tmp_path / "merged" / REPORT).read_text()
    assert report.count("## Training runs: clean accuracy and diversity") == 1
    accuracy = [100 * load_json(run / "results.json")["methods"]["pdd"]["test_accuracy"] for run in runs]
    row = next(line for line in report.splitlines() if line.startswith("| pdd |"))
    assert row.split(" | ")[1:3] == ["0, 1", f"{sum(accuracy) / 2:.1f} ± {abs(accuracy[0] - accuracy[1]) / 2 ** 0.5:.1f}"]
    # Without the training files the report has no such section.
    assert "## Training runs" not in (evaluations["merged"] / REPORT).read_text()


def test_parts_holding_one_seeds_diversity_analysis_give_table_1_over_the_seeds(runs, evaluations, tmp_path):
    """As examples/mnist_study.sh leaves them: beside each seed's attacks, an evaluation of the same
    flags with ``--attacks diversity`` (its clean results are the attacks' own, so the parts merge)."""
    analyses = []
    for seed, run in enumerate(runs):
        analyses.append(tmp_path / f"diversity{seed}")
        evaluate.main([str(run), "--out-dir", str(analyses[-1]), *FAST, "--attacks", "diversity"])
    out = tmp_path / "merged"
    merge.main([str(evaluations["seed0"]), str(evaluations["seed1"]), *map(str, analyses), "--out-dir", str(out)])
    assert _without_timing(load_json(out / "results.json")["results"]) == _without_timing(load_json(evaluations["merged"] / "results.json")["results"])
    report = (out / REPORT).read_text()
    assert report.count("## Diversity analysis (Table 1, Figs. 1-3)") == 1
    entropy = [load_json(analysis / "diversity" / "diversity.json")["methods"]["pdd"]["ambiguity_entropy"] for analysis in analyses]
    row = next(line for line in report.splitlines() if line.startswith("| E, eq. 5 (Table 1) |"))
    assert [cell.strip() for cell in row.strip("|").split("|")][2] == f"{sum(entropy) / 2:.3f} ± {abs(entropy[0] - entropy[1]) / 2 ** 0.5:.3f}"
    for seed in (0, 1):
        assert (out / f"diversity-seed-{seed}" / "fig2-discrimination.png").read_bytes()[:4] == b"\x89PNG"
    assert "## Diversity analysis" not in (evaluations["merged"] / REPORT).read_text()
