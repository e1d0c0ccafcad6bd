"""The robustness evaluation, ``examples/evaluate.py``: every attack lowers an undefended
ensemble's accuracy, every result and report section is written, finished attacks are
skipped on a rerun, the report is built from results alone, and bad input is refused."""

from __future__ import annotations

import json
import math
import runpy
import types
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("art")
pytest.importorskip("matplotlib")

from huang2021.data.splits import Split, digits_splits
from huang2021.evaluation import robustness
from huang2021.evaluation.attacks import LIBRARY_APGD, STRONG_ATTACKS, AttackSettings, craft
from huang2021.evaluation.report import REPORT
from huang2021.evaluation.results import robust_result
from huang2021.measures.clean import correct_on
from huang2021.run_dir import load_json
from huang2021.training.checkpoints import load_trained_ensembles

from ensemble_diversity import Ensemble

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
train = types.SimpleNamespace(**runpy.run_path(str(EXAMPLES / "train.py")))
evaluate = types.SimpleNamespace(**runpy.run_path(str(EXAMPLES / "evaluate.py")))


DEFAULT_STRONG = [attack for attack in STRONG_ATTACKS if attack not in LIBRARY_APGD]
"""The strong attacks of the default ``--attacks``; the library's APGD: tests/test_strong_apgd.py."""


def correct(members, images, labels) -> torch.Tensor:
    """``[N]`` bool: the ensemble of ``members`` classifies each image correctly."""
    return correct_on(Ensemble(members), Split(images, labels), 256)

# Few iterations everywhere: the tests check that each attack runs and bites, not its strength.
FAST = [
    "--limit", "8", "--threads", "1", "--steps", "3", "--cw-steps", "3", "--cw-search-steps", "1",
    "--strong-steps", "3", "--strong-restarts", "1", "--square-queries", "5",
    "--fgsm-eps", "0.2", "--bim-eps", "0.2", "--pgd-eps", "0.2", "--jsma-gamma", "0.1", "--cw-const", "1",
    "--sweep-linf", "0.1,0.2", "--sweep-l2", "1,2",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run many times faster on one thread than on contended cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A baseline ensemble that classifies digits well (4 epochs, ~96%), and a PDD one."""
    path = tmp_path_factory.mktemp("train")
    train.main(["--run-dir", str(path), "--methods", "baseline,pdd", "--epochs", "4", "--width", "16", "--lr", "0.1"])
    return path


@pytest.fixture(scope="module")
def authors_run_dir(tmp_path_factory) -> Path:
    """PDD without rescaling (the authors' code), which evaluate.py labels apart from the default's "pdd"."""
    path = tmp_path_factory.mktemp("authors")
    train.main(["--run-dir", str(path), "--methods", "pdd", "--pdd-scaling", "authors", "--epochs", "1", "--max-batches", "2", "--width", "16"])
    return path


@pytest.fixture(scope="module")
def evaluated(run_dir, authors_run_dir, tmp_path_factory) -> Path:
    """One evaluation with every attack, transfer from the run itself (Type I and II)."""
    out_dir = tmp_path_factory.mktemp("eval") / "out"
    evaluate.main([str(run_dir), str(authors_run_dir), "--out-dir", str(out_dir), *FAST,
                   "--type1-surrogate", str(run_dir), "--type2-surrogate", str(run_dir)])
    return out_dir


def test_load_trained_ensembles_gives_the_trained_models_in_eval_mode(run_dir):
    ensembles = load_trained_ensembles(run_dir)
    assert list(ensembles) == ["baseline", "pdd"]
    results = load_json(run_dir / "results.json")
    test = digits_splits(0, torch.device("cpu")).test
    for name, members in ensembles.items():
        assert len(members) == 3 and not any(member.training for member in members)
        accuracy = correct(members, test.images, test.labels).float().mean().item()
        assert accuracy == pytest.approx(results["methods"][name]["test_accuracy"])


@pytest.mark.parametrize(
    "attack, parameter, norm",
    [("fgsm", 0.2, np.inf), ("bim", 0.2, np.inf), ("pgd", 0.2, np.inf), ("pgd", 2.0, 2.0), ("jsma", 0.2, np.inf),
     ("cw", 10.0, 2.0), ("autoattack", 0.2, np.inf)],
)
def test_every_attack_lowers_the_accuracy_of_an_undefended_ensemble(run_dir, attack, parameter, norm):
    members = load_trained_ensembles(run_dir)["baseline"]
    test = digits_splits(0, torch.device("cpu")).test
    images, labels = test.images[:16], test.labels[:16]
    strong = attack == "autoattack"
    settings = AttackSettings(steps=10, jsma_theta=1.0, cw_steps=10, cw_lr=0.1, cw_search_steps=1, strong_steps=10, strong_restarts=1, square_queries=10)
    np.random.seed(0)
    adversarial = craft(attack, parameter, members, images.numpy(), labels.numpy() if strong else None, settings, norm=norm, device=torch.device("cpu"))

    assert adversarial.shape == images.shape and adversarial.min() >= 0.0 and adversarial.max() <= 1.0
    delta = (adversarial - images.numpy()).reshape(len(images), -1)
    if attack == "jsma":
        # gamma bounds the share of the 64 pixels changed; ART stops once it is exceeded, by at
        # most the 2 pixels of its last step. theta > 0: pixels only brighten.
        assert (delta != 0).sum(axis=1).max() <= parameter * 64 + 2 and delta.min() >= 0.0
    elif attack == "cw":
        # C&W has no bound: it returns the clean image unless it found an adversarial one, so
        # every image it changed is classified otherwise than before (the paper protocol's labels).
        changed = torch.from_numpy((delta != 0).any(axis=1))
        with torch.no_grad():
            before_attack, after_attack = (Ensemble(members).eval()(x).argmax(-1) for x in (images, torch.from_numpy(adversarial)))
        assert changed.any() and (before_attack != after_attack)[changed].all()
    elif norm == np.inf:
        assert np.abs(delta).max() <= parameter + 1e-5
    else:
        assert np.linalg.norm(delta, axis=1).max() <= parameter + 1e-4
    before = correct(members, images, labels).float().mean().item()
    after = correct(members, torch.from_numpy(adversarial), labels).float().mean().item()
    assert before >= 0.75
    assert after < before - 0.2


def test_every_attack_and_report_section_is_written(evaluated):
    results = load_json(evaluated / "results.json")["results"]
    methods = ["baseline", "pdd", "pdd (authors' scaling)"]
    for method in methods:
        for key in ("paper/fgsm/inf/0.2", "paper/bim/inf/0.2", "paper/pgd/inf/0.2", "paper/jsma/0/0.1", "paper/cw/2/1",
                    "strong/pgd-strong/inf/0.2", "strong/pgd-probs/inf/0.2", "strong/mora/inf/0.2", "strong/autoattack/inf/0.2",
                    "paper/pgd/inf/0.1", "paper/pgd/2/2", "strong/pgd-strong/2/1", "clean/none/-/0"):
            result = results[f"{key}/{method}/seed-0"]
            assert result["images"] == 8 and len(result["robust"]) == 8 and result["train_seed"] == 0
            assert 0 <= result["robust_correct"] <= result["clean_correct"] <= 8
            assert result["accuracy"] == result["robust_correct"] / 8
        # The strong attacks run in sequence, each on the survivors of the ones before it: each mask is the worst case so far.
        masks = [np.asarray(results[f"strong/{attack}/inf/0.2/{method}/seed-0"]["robust"], dtype=bool) for attack in DEFAULT_STRONG]
        assert all((later <= earlier).all() for earlier, later in zip(masks, masks[1:]))
        assert results[f"strong/autoattack/inf/0.2/{method}/seed-0"]["survivors_of"] == ["pgd-strong", "pgd-probs", "mora"]
    # The harness's first strong attack bites, under L_inf and L_2 (the sweep); each alone:
    # test_each_strong_attack_alone_lowers_an_undefended_ensembles_accuracy.
    for key in ("strong/pgd-strong/inf/0.2", "strong/pgd-strong/2/2"):
        result = results[f"{key}/baseline/seed-0"]
        assert result["robust_correct"] < result["clean_correct"], (key, result)
    # Type I: the baseline of the surrogate run for every target; Type II: the target's own method.
    surrogate = Path(results["clean/none/-/0/baseline/seed-0"]["run_dir"]).name
    assert f"transfer-I/pgd/inf/0.2/pdd (authors' scaling)/{surrogate}:baseline/seed-0" in results
    assert f"transfer-II/jsma/0/0.1/pdd (authors' scaling)/{surrogate}:pdd/seed-0" in results
    assert results["paper/pgd/inf/0.2/baseline/seed-0"]["model_output"] == "averaged probabilities"
    assert results["paper/pgd/inf/0.2/baseline/seed-0"]["labels"] == "model predictions"
    assert results["strong/pgd-strong/inf/0.2/baseline/seed-0"]["model_output"] == "averaged logits"
    assert results["strong/autoattack/inf/0.2/baseline/seed-0"]["model_output"] == "averaged probabilities"
    assert results["strong/pgd-probs/inf/0.2/baseline/seed-0"]["model_output"] == "averaged probabilities"
    assert results["strong/autoattack/inf/0.2/baseline/seed-0"]["labels"] == "true labels"

    csv_lines = (evaluated / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("key,protocol,attack") and len(csv_lines) == len(results) + 1
    config = load_json(evaluated / "config.json")
    assert config["versions"]["adversarial-robustness-toolbox"] and config["flags"]["limit"] == 8
    report = (evaluated / REPORT).read_text()
    for heading in ("# Robustness evaluation", "paper protocol (Tables 2, 3, 5)", "beside the strong protocol",
                    "transfer attacks (Table 4)", "(Fig. 4)", "## Time spent"):
        assert heading in report
    assert "| Attacks | Para. | baseline | pdd | pdd (authors' scaling) |" in report
    assert (evaluated / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    # The diversity analysis (Table 1, Figs. 1-3) on the same images, its figures linked from the report.
    assert "Table 1" in report
    for figure in ("fig1-gradcam.png", "fig2-discrimination.png", "fig3-gradient-angles.png"):
        assert (evaluated / "diversity" / figure).read_bytes()[:4] == b"\x89PNG"
        assert f"diversity/{figure}" in report
    diversity = load_json(evaluated / "diversity" / "diversity.json")
    assert set(diversity["methods"]) == set(methods)


@pytest.mark.parametrize("attack", DEFAULT_STRONG)
def test_each_strong_attack_alone_lowers_an_undefended_ensembles_accuracy(run_dir, tmp_path, attack):
    """Through the harness (``--attacks`` one strong attack, so it runs on every clean-correct image): at eps 0.2 it breaks some."""
    evaluate.main([str(run_dir), "--out-dir", str(tmp_path / "out"), *FAST, "--attacks", attack, "--methods", "baseline"])
    result = load_json(tmp_path / "out" / "results.json")["results"][f"strong/{attack}/inf/0.2/baseline/seed-0"]
    assert result["survivors_of"] == [] and result["clean_correct"] >= 6
    assert result["robust_correct"] < result["clean_correct"], result


def test_a_rerun_skips_finished_attacks(evaluated, run_dir, authors_run_dir, monkeypatch):
    before = (evaluated / "results.json").read_text()

    def no_attack(*args, **kwargs):
        raise AssertionError("a finished attack ran again")

    monkeypatch.setattr(robustness, "craft", no_attack)
    monkeypatch.setattr(robustness, "ensemble_pgd", no_attack)
    monkeypatch.setattr(robustness, "diversity_section", no_attack)
    evaluate.main([str(run_dir), str(authors_run_dir), "--out-dir", str(evaluated), *FAST,
                   "--type1-surrogate", str(run_dir), "--type2-surrogate", str(run_dir)])
    assert (evaluated / "results.json").read_text() == before
    assert len(load_json(evaluated / "config.json")["sessions"]) == 1


def test_a_failing_attack_keeps_the_results_before_it(run_dir, tmp_path, monkeypatch):
    calls = []
    real_craft = robustness.craft

    def craft_then_fail(*args, **kwargs):
        calls.append(args[0])
        if len(calls) > 1:
            raise RuntimeError("crash")
        return real_craft(*args, **kwargs)

    monkeypatch.setattr(robustness, "craft", craft_then_fail)
    with pytest.raises(RuntimeError, match="crash"):
        evaluate.main([str(run_dir), "--out-dir", str(tmp_path / "out"), *FAST, "--attacks", "fgsm,bim"])
    results = load_json(tmp_path / "out" / "results.json")["results"]
    assert "paper/fgsm/inf/0.2/baseline/seed-0" in results and "paper/fgsm/inf/0.2/pdd/seed-0" not in results
    assert "paper/fgsm/inf/0.2/baseline/seed-0" in (tmp_path / "out" / "results.csv").read_text()
    assert "FGSM" in (tmp_path / "out" / REPORT).read_text()


def test_robust_accuracy_counts_an_image_only_when_right_before_and_after():
    clean = torch.tensor([True, True, False, True])
    after = torch.tensor([True, False, True, False])  # image 2 turned right by the attack: not robust
    result = robust_result(clean, after)
    assert result["robust"] == [1, 0, 0, 0]
    assert result["accuracy"] == 0.25 and result["conditional_accuracy"] == pytest.approx(1 / 3)
    assert math.isnan(robust_result(torch.zeros(2, dtype=torch.bool), torch.ones(2, dtype=torch.bool))["conditional_accuracy"])


def _error(capsys, argv) -> str:
    with pytest.raises(SystemExit):
        evaluate.main(argv)
    return capsys.readouterr().err


def test_bad_input_is_refused_naming_the_flag(run_dir, tmp_path, capsys):
    out = ["--out-dir", str(tmp_path / "out")]
    error = _error(capsys, [str(tmp_path), *out])
    assert "RUN_DIR" in error and "config.json" in error
    assert "--pgd-eps" in _error(capsys, [str(run_dir), *out, "--pgd-eps", "0.1,1.5"])
    assert "--sweep-linf" in _error(capsys, [str(run_dir), *out, "--sweep-linf", "-0.1"])
    error = _error(capsys, [str(run_dir), *out, "--attacks", "pgd,deepfool"])
    assert "--attacks" in error and "deepfool" in error
    assert "--dataset" in _error(capsys, [str(run_dir), *out, "--dataset", "cifar100"])
    error = _error(capsys, [str(run_dir), *out, "--methods", "baseline,adp"])
    assert "--methods" in error and "'pdd'" in error
    assert "--type1-surrogate" in _error(capsys, [str(run_dir), *out, "--type1-surrogate", str(tmp_path)])
    assert "--type1-surrogate" in _error(capsys, [str(run_dir), *out, "--attacks", "transfer"])
    assert not (tmp_path / "out").exists()


def test_a_run_missing_a_model_is_refused(run_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((run_dir / "config.json").read_text())
    (broken / "model-baseline.pt").write_bytes((run_dir / "model-baseline.pt").read_bytes())
    error = _error(capsys, [str(broken), "--out-dir", str(tmp_path / "out")])
    assert "RUN_DIR" in error and "model-pdd.pt" in error


def test_resuming_with_other_flags_is_refused(evaluated, run_dir, capsys):
    error = _error(capsys, [str(run_dir), "--out-dir", str(evaluated), "--limit", "9"])
    assert "--out-dir" in error and "--limit" in error
    assert json.loads((evaluated / "config.json").read_text())["flags"]["limit"] == 8


def test_default_attacks_leave_out_transfer_without_a_surrogate(run_dir):
    config, _, _ = evaluate.parse([str(run_dir)])
    assert "transfer" not in config.run.attacks.split(",") and "diversity" in config.run.attacks.split(",")
    config, _, _ = evaluate.parse([str(run_dir), "--type1-surrogate", str(run_dir)])
    assert "transfer" in config.run.attacks.split(",")


def test_defaults_are_the_data_sets(run_dir):
    """digits: its grid and reduced C&W and Square; a flag given wins over the data set's default."""
    config, targets, _ = evaluate.parse([str(run_dir), "--cw-steps", "7"])
    assert targets.dataset == "digits" and config.run.dataset == "digits"
    assert config.parameters.fgsm_eps == (0.05, 0.1, 0.2) and config.parameters.sweep_l2 == (0.25, 0.5, 1.0, 2.0, 4.0)
    # Every test image by default (all 360 of digits).
    assert (config.run.limit, config.settings.cw_steps, config.settings.cw_search_steps, config.settings.square_queries) == (None, 7, 2, 1000)


@pytest.fixture(scope="module")
def seed1_run_dir(tmp_path_factory) -> Path:
    """The baseline and PDD of ``run_dir`` trained again with --seed 1 (another split, other initial weights)."""
    path = tmp_path_factory.mktemp("seed1")
    train.main(["--run-dir", str(path), "--seed", "1", "--methods", "baseline,pdd", "--epochs", "2", "--width", "16", "--lr", "0.1", "--robust-eps"])
    return path


def test_runs_of_several_seeds_are_evaluated_each_on_its_split_and_averaged(run_dir, seed1_run_dir, tmp_path, capsys):
    out_dir = tmp_path / "out"
    evaluate.main([str(run_dir), str(seed1_run_dir), "--out-dir", str(out_dir), *FAST, "--attacks", "fgsm,pgd-strong,pgd-probs"])
    # --methods keeps only the named targets, of every seed.
    evaluate.main([str(run_dir), str(seed1_run_dir), "--out-dir", str(tmp_path / "only"), *FAST, "--attacks", "fgsm", "--methods", "pdd"])
    assert {result["method"] for result in load_json(tmp_path / "only" / "results.json")["results"].values()} == {"pdd"}
    results = load_json(out_dir / "results.json")["results"]
    for seed in (0, 1):
        test = digits_splits(seed, torch.device("cpu")).test
        for method in ("baseline", "pdd"):
            members = load_trained_ensembles(run_dir if seed == 0 else seed1_run_dir)[method]
            clean = results[f"clean/none/-/0/{method}/seed-{seed}"]
            # Each seed's ensembles are scored on that seed's own test split.
            assert clean["robust"] == correct(members, test.images[:8], test.labels[:8]).to(torch.uint8).tolist()
            assert f"strong/pgd-probs/inf/0.2/{method}/seed-{seed}" in results
        baseline = results[f"strong/pgd-strong/inf/0.2/baseline/seed-{seed}"]
        assert baseline["robust_correct"] < baseline["clean_correct"], baseline
    accuracies = [results[f"paper/fgsm/inf/0.2/baseline/seed-{seed}"]["accuracy"] for seed in (0, 1)]
    report = (out_dir / REPORT).read_text()
    assert f"{100 * np.mean(accuracies):.1f} ± {100 * np.std(accuracies, ddof=1):.1f}" in report and "## Headline" in report
    # The diversity analysis and transfer attacks need one seed's targets.
    config, _, _ = evaluate.parse([str(run_dir), str(seed1_run_dir)])
    assert not {"diversity", "transfer"} & set(config.run.attacks.split(","))
    assert "--attacks" in _error(capsys, [str(run_dir), str(seed1_run_dir), "--attacks", "fgsm,diversity"])
    assert "--type1-surrogate" in _error(capsys, [str(run_dir), str(seed1_run_dir), "--type1-surrogate", str(run_dir)])
    assert "--type2-surrogate" in _error(capsys, [str(run_dir), "--type2-surrogate", str(seed1_run_dir)])
