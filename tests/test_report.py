"""The evaluation report (``huang2021/evaluation/report.py``) from hand-built results: cells over
training seeds, paired differences with their intervals, Table 6, and the one-seed format."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from huang2021.evaluation.attacks import AttackSettings
from huang2021.evaluation.report import Difference, _points, write_report
from huang2021.evaluation.results import result_key, robust_result
from scipy import stats

N = 10
"""Test images per seed."""
SEEDS = (0, 1, 2)
CLEAN = {"baseline": [9, 8, 10], "pdd": [10, 9, 9], "deg": [9, 9, 9], "advt-fgsm": [8, 8, 9], "advt-fgsm+pdd": [8, 9, 8],
         "advt-pgd": [8, 7, 8], "advt-pgd+pdd": [7, 8, 8]}
"""Clean images right per method and seed."""
WORST = {
    "baseline": {0.1: [2, 1, 3], 0.2: [1, 0, 1]},
    "pdd": {0.1: [5, 4, 7], 0.2: [2, 1, 2]},  # +30, +30, +40 at 0.1: significant
    "deg": {0.1: [3, 0, 4], 0.2: [1, 0, 0]},  # +10, -10, +10 at 0.1: not significant
    "advt-fgsm": {0.1: [4, 4, 5], 0.2: [2, 2, 3]},
    "advt-fgsm+pdd": {0.1: [5, 3, 5], 0.2: [3, 1, 3]},  # +10, -10, 0 at both: not significant
    "advt-pgd": {0.1: [5, 6, 4], 0.2: [2, 3, 1]},
    "advt-pgd+pdd": {0.1: [6, 6, 5], 0.2: [4, 5, 4]},  # +10, 0, +10 at 0.1: not; +20, +20, +30 at 0.2: significant
}
"""Images robust to every strong attack per method, eps and seed."""
FLAGS = {"run_dirs": ["r0", "r1", "r2"], "dataset": "digits", "limit": N, "seed": 0, "fgsm_eps": [0.2], "bim_eps": [], "pgd_eps": [0.1],
         "sweep_linf": [0.1, 0.2, 0.4], "sweep_l2": [], **AttackSettings().as_dict()}
CONFIG = {"flags": FLAGS, "argv": ["r0", "r1", "r2"], "versions": {"torch": "x"}, "sessions": []}


def _result(protocol, attack, norm, value, method, robust, surrogate=None, seconds=1.5, train_seed=0):
    robust = torch.tensor(robust, dtype=torch.bool)
    # Clean results are their own "before": every other result's images were all right before.
    clean = robust if protocol == "clean" else torch.ones_like(robust)
    key = result_key(protocol, attack, norm, value, method, surrogate, train_seed=train_seed)
    return key, robust_result(clean, robust, key=key, protocol=protocol, attack=attack, norm=norm, value=value, method=method,
                              train_seed=train_seed, surrogate=surrogate, settings=AttackSettings().as_dict(), seconds=seconds)


def _mask(count: int, *also: int) -> list[int]:
    """The first ``count`` images robust, and the images ``also``."""
    return [int(i < count or i in also) for i in range(N)]


def _strong_masks(worst: int, eps: float) -> dict[str, list[int]]:
    """Each strong attack's mask for a cell whose worst case keeps the first ``worst`` images.

    PGD and MORA each keep one image the other breaks, so only their AND gives ``worst``; AutoAttack
    runs on their survivors at 0.1 and is missing at 0.2 (not run yet), where the AND is all there is.
    """
    masks = {"pgd-strong": _mask(worst, worst), "mora": _mask(worst, worst + 1)}
    if eps == 0.1:
        masks["autoattack"] = _mask(worst)
    return masks


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """The report of 7 methods x 3 training seeds."""
    results = _seeded_results()
    out = tmp_path_factory.mktemp("seeded")
    return out, results, write_report(out, results, CONFIG).read_text()


def _seeded_results() -> dict:
    """The results of 7 methods x 3 training seeds."""
    rows = []
    for method, clean in CLEAN.items():
        for index, seed in enumerate(SEEDS):
            rows.append(_result("clean", "none", "-", 0.0, method, _mask(clean[index]), train_seed=seed))
            # The paper protocol keeps 2 (PGD at 0.1) and 3 (FGSM at 0.2) images more than the strong one.
            rows.append(_result("paper", "pgd", "inf", 0.1, method, _mask(WORST[method][0.1][index] + 2), train_seed=seed))
            rows.append(_result("paper", "fgsm", "inf", 0.2, method, _mask(WORST[method][0.2][index] + 3), train_seed=seed))
            for eps in (0.1, 0.2):
                for attack, mask in _strong_masks(WORST[method][eps][index], eps).items():
                    rows.append(_result("strong", attack, "inf", eps, method, mask, train_seed=seed))
            # The strong sweep's last point: all broken but one image of pdd's seed 0.
            rows.append(_result("strong", "pgd-strong", "inf", 0.4, method, _mask(int(method == "pdd" and seed == 0)), train_seed=seed))
    results = dict(rows)
    assert len(results) == len(rows)
    return results


def _worst(method: str, eps: float) -> np.ndarray:
    """Per seed, in %: the AND of the strong masks of that seed, computed here from the masks themselves."""
    return np.array([100 * np.logical_and.reduce([np.array(m, bool) for m in _strong_masks(w, eps).values()]).mean() for w in WORST[method][eps]])


def _mean_std(values: np.ndarray) -> str:
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[str, str, bool]:
    d = a - b
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return f"{d.mean():+.1f}", f"{d.mean() - half:+.1f} to {d.mean() + half:+.1f}", bool(d.mean() - half > 0 or d.mean() + half < 0)


def test_cells_are_mean_and_std_over_seeds(seeded):
    _, _, report = seeded
    assert "Training seeds: 0, 1, 2." in report and "each training seed's own test split" in report
    assert "Over 3 training seeds" in report
    # Clean accuracy of the baseline: 90, 80, 100 %.
    assert "| clean | - | 90.0 ± 10.0 | 93.3 ± 5.8 | 90.0 ± 0.0 |" in report
    # The paper protocol's PGD at 0.1 keeps 4, 3, 5 images of the baseline's: no conditional accuracy with seeds.
    assert "| PGD | 0.1 | 40.0 ± 10.0 | 73.3 ± 15.3 |" in report
    # One strong attack alone: PGD keeps worst + 1 images, 3, 2, 4 for the baseline.
    assert "| PGD-100x5 logits (strong) | 0.1 | 30.0 ± 10.0 |" in report
    assert "| then MORA-style 100x5 (strong) | 0.2 | 16.7 ± 5.8 |" in report
    assert "| then AutoAttack (strong) | 0.1 | 20.0 ± 10.0 |" in report


def test_the_worst_case_is_the_and_of_the_masks_per_seed_then_the_mean(seeded):
    _, _, report = seeded
    methods = list(CLEAN)
    # At 0.2 there is no AutoAttack: the worst case is only the AND of PGD and MORA (each alone keeps one image more).
    expected = " | ".join(_mean_std(_worst(m, 0.2)) for m in methods)
    assert f"| **strong, worst case** | 0.2 | {expected} |" in report
    assert _mean_std(_worst("baseline", 0.2)) == "6.7 ± 5.8"
    # The headline shows the worst case at the data set's main eps (pgd_eps) only.
    assert f"| strong, worst case | 0.1 | {' | '.join(_mean_std(_worst(m, 0.1)) for m in methods)} |" in report
    assert "| strong, worst case | 0.2 | 6.7 ± 5.8 | 16.7" not in report.split("## Table 6")[0]
    # The FLAG table compares mean gains: pdd +33.3 points under the paper's PGD and under the strong worst case.
    assert "| PGD | 0.1 | +33.3 -> +33.3 | +3.3 -> +3.3 |" in report


def test_differences_from_the_baseline_are_paired_by_seed(seeded):
    _, _, report = seeded
    mean, interval, significant = _paired(_worst("pdd", 0.1), _worst("baseline", 0.1))
    assert significant and (mean, interval) == ("+33.3", "+19.0 to +47.7")
    assert f"| strong, worst case | 0.1 | pdd - baseline | {mean} | {interval} | significant |" in report
    mean, interval, significant = _paired(_worst("deg", 0.1), _worst("baseline", 0.1))
    assert not significant and (mean, interval) == ("+3.3", "-25.4 to +32.0")
    assert f"| strong, worst case | 0.1 | deg - baseline | {mean} | {interval} | not significant |" in report
    assert "At eps 0.1 under the strong worst case, deg is +3.3 points from baseline (95 % interval -25.4 to +32.0 over 3 seeds): not significant." in report
    assert "At eps 0.1 under the strong worst case, pdd is +33.3 points from baseline (95 % interval +19.0 to +47.7 over 3 seeds): significant." in report
    mean, interval, _ = _paired(np.array(CLEAN["pdd"]) * 10.0, np.array(CLEAN["baseline"]) * 10.0)
    assert f"| clean | - | pdd - baseline | {mean} | {interval} | not significant |" in report


def test_table_6_says_whether_pdd_adds_robustness_to_adversarial_training(seeded):
    _, _, report = seeded
    table = report.split("## Table 6: adversarial training with and without PDD")[1].split("\n## ")[0]
    assert "| Attacks | eps | baseline | advt-fgsm | advt-fgsm+pdd | advt-pgd | advt-pgd+pdd |" in table
    assert "| No Attack | - | 90.0 ± 10.0 | 83.3 ± 5.8 | 83.3 ± 5.8 | 76.7 ± 5.8 | 76.7 ± 5.8 |" in table
    assert "| FGSM (paper) | 0.2 | 36.7 ± 5.8 |" in table and "| PGD (paper) | 0.1 | 40.0 ± 10.0 |" in table
    assert "pdd - baseline" not in table and "| deg" not in table
    mean, interval, significant = _paired(_worst("advt-pgd+pdd", 0.2), _worst("advt-pgd", 0.2))
    assert significant and f"| strong, worst case | 0.2 | advt-pgd+pdd - advt-pgd | {mean} | {interval} | significant |" in table
    mean, interval, significant = _paired(_worst("advt-pgd+pdd", 0.1), _worst("advt-pgd", 0.1))
    assert not significant and f"| strong, worst case | 0.1 | advt-pgd+pdd - advt-pgd | {mean} | {interval} | not significant |" in table
    assert "Under the strong protocol PDD adds significant robustness to advt-pgd at eps 0.2." in table
    # +10, -10, 0 points cancel to +0.0, never -0.0.
    assert "| strong, worst case | 0.1 | advt-fgsm+pdd - advt-fgsm | +0.0 | -24.8 to +24.8 | not significant |" in table
    assert "Under the strong protocol PDD adds no significant robustness to advt-fgsm at any eps." in table


def test_the_sweep_has_error_bars_and_a_limit_on_the_mean(seeded):
    out, results, report = seeded
    # At 0.4 every method's mean is 0 but pdd's (one image of one seed).
    assert "| PGD-100x5 logits L_inf | limit | 0.4 | > 0.4 | 0.4 | 0.4 | 0.4 | 0.4 | 0.4 |" in report
    assert "| PGD-100x5 logits L_inf | 0.4 | 0.0 ± 0.0 | 3.3 ± 5.8 |" in report
    # The text names the grid it swept (not always a doubling one) and the restarts in plain words.
    assert "PGD over increasing epsilons (L_inf 0.1, 0.2, 0.4; paper protocol" in report
    assert "strong: 100 steps, 5 restart(s), averaged logits" in report
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    # Time is summed over the seeds: 7 methods x 3 seeds of the paper's PGD.
    assert "| paper | PGD | 21 | 32 |" in report


def test_the_sweep_figure_draws_the_mean_over_seeds_with_the_std_as_error_bars(tmp_path, monkeypatch):
    """The strong sweep's points as drawn: per epsilon the mean over the seeds and, as bars, the std (ddof 1)."""
    import matplotlib.axes

    drawn = {}
    errorbar = matplotlib.axes.Axes.errorbar

    def record(axis, x, y, *args, yerr=None, **kwargs):
        drawn.setdefault(kwargs["label"], []).append((list(x), list(y), yerr))
        return errorbar(axis, x, y, *args, yerr=yerr, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", record)
    write_report(tmp_path, _seeded_results(), CONFIG)
    # One panel, the strong PGD under L_inf (the paper's PGD has no sweep results here).
    ((xs, means, errors),) = drawn["pdd"]
    # pdd's strong PGD keeps worst + 1 images: 6, 5, 8 of 10 at 0.1; 3, 2, 3 at 0.2; at 0.4, 1 image of seed 0 only.
    by_eps = {0.1: [60, 50, 80], 0.2: [30, 20, 30], 0.4: [10, 0, 0]}
    assert xs == [0.1, 0.2, 0.4]
    np.testing.assert_allclose(means, [np.mean(by_eps[eps]) for eps in xs])
    np.testing.assert_allclose(errors, [np.std(by_eps[eps], ddof=1) for eps in xs])
    assert set(drawn) == set(CLEAN)


def test_one_seed_is_a_smoke_test_not_a_result(tmp_path):
    """Results from before seeds (no ``train_seed``) are one seed: today's cells, no interval."""
    rows = [_result("clean", "none", "-", 0.0, m, _mask(c)) for m, c in (("baseline", 8), ("advt-pgd", 7), ("advt-pgd+pdd", 9))]
    for method, worst in (("baseline", 2), ("advt-pgd", 4), ("advt-pgd+pdd", 6)):
        rows += [_result("strong", attack, "inf", 0.1, method, mask) for attack, mask in _strong_masks(worst, 0.1).items()]
    results = dict(rows)
    for result in results.values():
        del result["train_seed"]
    report = write_report(tmp_path, results, CONFIG).read_text()
    assert "Training seeds: not recorded (one seed)." in report and "One training seed" in report
    assert "| clean | - | 80.0 (100.0) | 70.0 (100.0) | 90.0 (100.0) |" in report
    assert "| strong, worst case | 0.1 | 20.0 | 40.0 | 60.0 |" in report
    assert "| strong, worst case | 0.1 | advt-pgd - baseline | +20.0 | - | one seed: a smoke test |" in report
    assert "At eps 0.1 under the strong worst case, advt-pgd is +20.0 points from baseline on one seed: a smoke test, not a result." in report
    assert "With one training seed it cannot be told whether PDD adds robustness to advt-pgd under the strong protocol" in report
    assert not any("±" in line for line in report.splitlines() if line.startswith("|"))


def test_the_report_is_built_from_results_alone(tmp_path):
    """Baseline 1/4 robust; ``kept`` keeps its paper-protocol gain under the strong protocol, ``erased`` loses it."""
    rows = [
        _result("clean", "none", "-", 0.0, "baseline", [1, 1, 1, 0]),
        _result("clean", "none", "-", 0.0, "kept", [1, 1, 1, 1]),
        _result("clean", "none", "-", 0.0, "erased", [1, 1, 1, 1]),
        _result("paper", "pgd", "inf", 0.1, "baseline", [1, 0, 0, 0]),
        _result("paper", "pgd", "inf", 0.1, "kept", [1, 1, 1, 0]),
        _result("paper", "pgd", "inf", 0.1, "erased", [1, 1, 1, 1]),
        _result("strong", "pgd-strong", "inf", 0.1, "baseline", [1, 0, 0, 0]),
        _result("strong", "pgd-strong", "inf", 0.1, "kept", [1, 1, 1, 0]),
        _result("strong", "pgd-strong", "inf", 0.1, "erased", [1, 1, 1, 0]),
        _result("strong", "autoattack", "inf", 0.1, "baseline", [0, 0, 0, 0]),
        _result("strong", "autoattack", "inf", 0.1, "kept", [1, 1, 0, 0]),
        _result("strong", "autoattack", "inf", 0.1, "erased", [0, 0, 0, 1]),
        _result("paper", "pgd", "inf", 0.2, "baseline", [0, 0, 0, 0]),
        _result("paper", "pgd", "inf", 0.2, "kept", [1, 0, 0, 0]),
        _result("paper", "pgd", "inf", 0.2, "erased", [0, 0, 0, 0]),
        _result("transfer-I", "fgsm", "inf", 0.1, "kept", [1, 1, 0, 0], surrogate="s:baseline"),
        # A strong-sweep point at an epsilon outside the paper protocol's: in the sweep, not beside AutoAttack.
        _result("strong", "pgd-strong", "inf", 0.2, "baseline", [0, 0, 0, 0]),
    ]
    results = dict(rows)
    flags = {"run_dirs": ["r"], "dataset": "digits", "limit": 4, "seed": 0, "fgsm_eps": [], "bim_eps": [], "pgd_eps": [0.1],
             "sweep_linf": [0.1, 0.2], "sweep_l2": [0.5], **AttackSettings().as_dict()}
    config = {"flags": flags,
              "argv": ["r", "--limit", "4"], "versions": {"torch": "x"}, "sessions": []}
    report = write_report(tmp_path, results, config).read_text()

    assert "| No Attack | - | 75.0 (100.0) | 100.0 (100.0) | 100.0 (100.0) |" in report
    assert "| PGD | 0.1 | 25.0 (25.0) | 75.0 (75.0) | 100.0 (100.0) |" in report
    # Worst case over both strong attacks: baseline 0, kept 2/4, erased 0/4.
    assert "| **strong, worst case** | 0.1 | 0.0 | 50.0 | 0.0 |" in report
    # Gains: kept +50 -> +50 (kept), erased +75 -> +0 (flagged).
    assert "| PGD | 0.1 | +50.0 -> +50.0 | +75.0 -> +0.0 **FLAG** |" in report
    # Sweep: the paper PGD reaches zero at 0.2 for baseline and erased, never for kept.
    assert "| PGD L_inf | limit | 0.2 | > 0.2 | 0.2 |" in report
    assert "| Type I | FGSM | 0.1 | - | 50.0 (50.0) | - |" in report
    assert (tmp_path / "sweep.png").exists()
    # Time spent: 6 paper PGD results of 1.5 s; clean results are not attacks.
    assert "| paper | PGD | 6 | 9 |" in report
    assert "| **all** |  | 14 | 21 |" in report
    assert "| PGD-100x5 logits (strong) | 0.1 |" in report and "| PGD-100x5 logits (strong) | 0.2 |" not in report
    assert "| PGD-100x5 logits L_inf | 0.2 | 0.0 (0.0) | - | - |" in report


@pytest.mark.parametrize(
    "value, text",
    [(-0.03, "-0.0"), (0.03, "+0.0"), (0.0, "+0.0"), (-0.0, "+0.0"), (-1e-15, "+0.0"), (-2.84, "-2.8"), (3.96, "+4.0"), (-3.96, "-4.0")],
)
def test_points_keep_the_sign_of_the_unrounded_value(value, text):
    assert _points(value) == text


def test_an_interval_that_excludes_0_by_less_than_the_rounding_prints_its_sign():
    """Paired differences -1.46 +- 1.40: the interval -2.86 to -0.06 excludes 0, and says so in print."""
    difference = Difference(mean=-1.46, half_width=1.40, seeds=3)
    assert difference.significant and difference.interval() == "-2.9 to -0.1"
    close = Difference(mean=-1.43, half_width=1.40, seeds=3)
    assert close.significant and close.interval() == "-2.8 to -0.0"
    assert Difference(mean=-1.37, half_width=1.40, seeds=3).interval() == "-2.8 to +0.0"


def test_the_peers_are_set_against_pdd_deg_paired_by_seed(tmp_path):
    """TRS and DVERGE get their own table of differences from PDD+DEG (not from the baseline alone)."""
    worst = {"baseline": [2, 1, 3], "pdd+deg": [4, 3, 5], "trs": [1, 2, 2], "dverge": [8, 7, 9]}
    results = {}
    for method, counts in worst.items():
        for seed, count in zip(SEEDS, counts, strict=True):
            results.update([_result("clean", "none", "-", 0.0, method, _mask(N), train_seed=seed)])
            results.update([_result("strong", "pgd-strong", "inf", 0.1, method, _mask(count), train_seed=seed)])
    report = write_report(tmp_path, results, CONFIG).read_text()
    section = report[report.index("## TRS and DVERGE against PDD+DEG") :]
    # dverge - pdd+deg: +40 points in every seed (interval of width 0); trs - pdd+deg: -30, -10, -30.
    assert "| strong, worst case | 0.1 | dverge - pdd+deg | +40.0 | +40.0 to +40.0 | significant |" in section
    d = np.array([-30.0, -10.0, -30.0])
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    assert f"| strong, worst case | 0.1 | trs - pdd+deg | {d.mean():+.1f} | {d.mean() - half:+.1f} to {d.mean() + half:+.1f} | not significant |" in section
    # Without PDD+DEG among the methods the section is left out.
    without_pdd_deg = {key: result for key, result in results.items() if result["method"] != "pdd+deg"}
    assert "## TRS and DVERGE" not in write_report(tmp_path, without_pdd_deg, CONFIG).read_text()
