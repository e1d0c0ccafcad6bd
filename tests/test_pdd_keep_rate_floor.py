"""Issue 20: PDD's ``rescale_floor``, a floor on the keep rate that inverted dropout divides by."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ensemble_diversity import PriorityDiversifiedDropout


def features(seed: int = 0, shape: tuple[int, int, int] = (3, 16, 64)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(*shape, generator=generator)) + 0.01  # no zero unit: every ratio is defined


def test_floor_zero_is_the_default_bit_for_bit():
    x = features()
    torch.manual_seed(7)
    default = PriorityDiversifiedDropout(3)(x)
    torch.manual_seed(7)
    floored = PriorityDiversifiedDropout(3, rescale_floor=0.0)(x)
    assert torch.equal(default, floored)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), floor=st.floats(0.01, 1.0), beta=st.floats(0.05, 1.0))
def test_each_kept_unit_is_divided_by_the_larger_of_its_keep_rate_and_the_floor(seed, floor, beta):
    """Hand-written reference: the same Bernoulli draw, then x * mask / max(p, floor)."""
    x = features(seed)
    pdd = PriorityDiversifiedDropout(3, beta=beta, rescale_floor=floor)
    rates = pdd.keep_probabilities(x)
    torch.manual_seed(seed)
    out = pdd(x)
    torch.manual_seed(seed)
    mask = torch.bernoulli(rates)
    expected = torch.where(mask > 0, x / torch.maximum(rates, torch.tensor(floor)), torch.zeros_like(x))
    torch.testing.assert_close(out, expected)
    assert float((out / x).max()) <= 1.0 / floor + 1e-5  # the amplification is capped


def test_the_floor_shrinks_the_expectation_only_below_it():
    """Mean over many draws: x where p >= floor, x * p / floor where p < floor."""
    x = features(1, (3, 4, 32))
    floor = 0.08
    pdd = PriorityDiversifiedDropout(3, rescale_floor=floor)
    rates = pdd.keep_probabilities(x)
    assert bool((rates < floor).any()) and bool((rates >= floor).any())
    torch.manual_seed(0)
    mean = torch.stack([pdd(x) for _ in range(4000)]).mean(0)
    expected = x * torch.where(rates >= floor, torch.ones_like(rates), rates / floor)
    # 4000 draws: the sd of a unit's mean is x * sqrt((1 - p) / p) / sqrt(4000) <= 0.06 x for p >= 0.03
    reliable = rates >= 0.03
    torch.testing.assert_close(mean[reliable], expected[reliable], rtol=0.25, atol=0.0)


def test_bad_floors_are_refused_naming_the_argument():
    with pytest.raises(ValueError, match=r"`rescale_floor` to be a number in \[0, 1\], but got 1\.5"):
        PriorityDiversifiedDropout(3, rescale_floor=1.5)
    with pytest.raises(ValueError, match=r"`rescale_floor` to be 0 when rescale=False"):
        PriorityDiversifiedDropout(3, rescale=False, rescale_floor=0.1)


def test_the_floor_is_part_of_the_saved_settings_and_old_states_still_load():
    floored = PriorityDiversifiedDropout(3, rescale_floor=0.1)
    assert "rescale_floor=0.1" in repr(floored)
    assert "rescale_floor" not in repr(PriorityDiversifiedDropout(3))
    with pytest.raises(ValueError, match=r"rescale_floor: module has 0\.0, state has 0\.1"):
        PriorityDiversifiedDropout(3).load_state_dict(floored.state_dict())
    with pytest.raises(ValueError, match=r"rescale_floor: module has 0\.1, state has 0\.0"):
        PriorityDiversifiedDropout(3, rescale_floor=0.1).load_state_dict(PriorityDiversifiedDropout(3).state_dict())
    # A state saved without the option (as every state before it) loads into a default PDD.
    PriorityDiversifiedDropout(3).load_state_dict(PriorityDiversifiedDropout(3).state_dict())
    PriorityDiversifiedDropout(3, rescale_floor=0.1).load_state_dict(floored.state_dict())


# --- docs/method.md's numbers, recomputed from the committed result files ---------------------

ROOT = Path(__file__).resolve().parents[1]


def method_text() -> str:
    return " ".join((ROOT / "docs" / "method.md").read_text().split())


def test_the_keep_rate_table_in_method_md_is_the_committed_measurement():
    rows = json.loads((ROOT / "benchmarks" / "results" / "pdd_keep_rates.json").read_text())["rows"]
    text = method_text()
    for step in ("0", "10", "50", "150"):
        row = rows[step]
        every, outside = row["factor_all_units"], row["factor_outside_priority"]
        ce = row["ce_through_pdd_by_floor"]
        eval_ce = row["ce_without_pdd_eval"]
        line = (
            f"| {step} | {every['q50']:.1f} / {every['q90']:.1f} / {every['q99']:.1f} / {every['q100']:.1f} | "
            f"{outside['q50']:.1f} / {outside['q100']:.1f} | {100 * row['share_units_outside_priority']:.0f} % | "
            f"{100 * row['share_mass_factor_ge_10']:.0f} % | "
            f"{eval_ce:.{1 if eval_ce >= 10 else 2}f} / {ce['0.0']:.2f} / {ce['0.1']:.2f} |"
        )
        assert line in text, line
        assert row["share_units_factor_ge_100"] == 0.0 and row["share_units_rate_0"] == 0.0  # "no unit reached 100, none had rate 0"


def test_the_floor_comparison_table_in_method_md_is_the_committed_comparison():
    methods = json.loads((ROOT / "benchmarks" / "results" / "pdd_rescale_floor.json").read_text())["methods"]
    text = method_text()
    names = {"test_accuracy": "clean %", "pgd50_eps0.05": "PGD-50 eps 0.05", "pgd50_eps0.1": "PGD-50 eps 0.1"}
    for method, columns in methods.items():
        for column, cell in columns.items():
            if column not in names:  # the gradient angle, not quoted there
                continue
            (a, sa), (b, sb) = cell["baseline_mean_sd"], cell["other_mean_sd"]
            # recomputed here from the per-seed values, not read from the summary
            assert a == pytest.approx(sum(cell["baseline"]) / 3) and b == pytest.approx(sum(cell["other"]) / 3)
            differences = [y - x for x, y in zip(cell["baseline"], cell["other"])]
            per_seed = ", ".join(f"{d:+.2f}" for d in differences)
            line = (
                f"| {method} | {names[column]} | {a:.2f} +- {sa:.2f} | {b:.2f} +- {sb:.2f} | "
                f"{sum(differences) / 3:+.2f} ({per_seed}) |"
            )
            assert line in text, line
            assert max(abs(d) for d in differences) <= 2.3  # "every paired difference is within 2.3 points"
    pdd, both = methods["pdd"]["angle_degrees"], methods["pdd+deg"]["angle_degrees"]
    assert min(pdd["paired_differences"] + both["paired_differences"]) > 0  # "rose in every seed"
    quoted = (
        f"from {pdd['baseline_mean_sd'][0]:.2f} to {pdd['other_mean_sd'][0]:.2f} degrees for PDD and from "
        f"{both['baseline_mean_sd'][0]:.2f} to {both['other_mean_sd'][0]:.2f} for PDD+DEG (paired "
        f"{pdd['mean_difference']:+.2f} and {both['mean_difference']:+.2f})"
    )
    assert quoted in text, quoted


def test_the_weight_sweep_table_in_the_readme_is_the_committed_comparisons():
    text = " ".join((ROOT / "README.md").read_text().split())
    rows = {"lambda 0.1": ("lambda0.1", "0, 1, 2"), "lambda 1": ("lambda1", "0"), "beta 0.3": ("beta0.3", "0"), "alpha 0.5": ("alpha0.5", "0")}
    for change, (name, seeds) in rows.items():
        cells = json.loads((ROOT / "benchmarks" / "results" / f"digits_sweep-{name}.json").read_text())["methods"]["pdd+deg"]
        shown = []
        for column in ("test_accuracy", "pgd50_eps0.05", "pgd50_eps0.1", "angle_degrees"):
            differences = [b - a for a, b in zip(cells[column]["baseline"], cells[column]["other"])]
            mean = f"{sum(differences) / len(differences):+.2f}"
            if change == "lambda 0.1" and column == "pgd50_eps0.1":
                mean += " (" + ", ".join(f"{d:+.2f}" for d in differences) + ")"
                assert min(differences) > 7.0  # "7 to 8 points at eps 0.1 in every seed"
            shown.append(mean)
        line = f"| {change} | {seeds} | " + " | ".join(shown) + " |"
        assert line in text, line
