"""Every number README.md and docs/evaluation.md quote about the digits report, recomputed from its result files.

A harness test (the results are ``examples/huang2021``'s; it needs SciPy, an extra), so
``--library-only`` leaves it out.

Each row of :data:`QUOTES` is a file, a sentence with ``{}`` where the numbers go, and how to
recompute those numbers from the committed ``results.csv`` files (docs/digits-report/ and its
budget check); the sentence, filled in, must appear in the file (line breaks count as spaces).
A changed result file or a reworded sentence fails here until the two agree again. Wall-clock
times measured around whole commands are not in the result files and are not checked.

The arithmetic is this file's own reading of docs/evaluation.md, not the report's code: a cell
is the mean ± std (ddof 1) over the training seeds of the accuracy over all images, in %; the
strong worst case per seed is the lowest accuracy of the strong attacks at that epsilon (each
runs on the survivors of the ones before, so the lowest is the AND of their masks); a
difference is paired by seed with a 95 % t-interval, significant when it excludes 0.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "docs" / "digits-report"
MAIN_COMMAND = ROOT / "docs" / "main-command"
"""The main command's ``results.json`` per seed (``python examples/train.py --seed N``), the README table's source."""
SEEDS = (0, 1, 2, 3, 4)
"""The digits report's training seeds."""
MAIN_COMMAND_SEEDS = (0, 1, 2)
DEFAULT_SCALING = ("baseline", "adp", "pdd", "deg", "pdd+deg", "advt-fgsm", "advt-fgsm+pdd", "advt-pgd", "advt-pgd+pdd")
AUTHORS = ("pdd (authors' scaling)", "pdd+deg (authors' scaling)")
PEERS = ("trs", "dverge")
HEADLINE_ATTACKS = ("pgd-strong", "pgd-probs", "mora")


class Results:
    """The rows of one ``results.csv``, by key fields."""

    def __init__(self, path: Path) -> None:
        self.rows = list(csv.DictReader(path.open()))
        self.accuracy = {
            (row["protocol"], row["attack"], row["norm"], float(row["value"]), row["method"], int(row["train_seed"])): 100 * float(row["accuracy"])
            for row in self.rows
        }

    def seeds(self, protocol: str, attack: str, norm: str, value: float, method: str, seeds: tuple[int, ...] = SEEDS) -> np.ndarray:
        """``[S]``: the accuracy in % per training seed."""
        return np.array([self.accuracy[(protocol, attack, norm, value, method, seed)] for seed in seeds])

    def clean(self, method: str, seeds: tuple[int, ...] = SEEDS) -> np.ndarray:
        return self.seeds("clean", "none", "-", 0.0, method, seeds)

    def strong_seconds(self) -> float:
        """Seconds the strong attacks took, summed over every result."""
        return sum(float(row["seconds"]) for row in self.rows if row["protocol"] == "strong")

    def worst(self, method: str, eps: float, attacks: tuple[str, ...] = HEADLINE_ATTACKS, seeds: tuple[int, ...] = SEEDS) -> np.ndarray:
        return np.min([self.seeds("strong", attack, "inf", eps, method, seeds) for attack in attacks], axis=0)

    def count(self, predicate: Callable[[dict[str, str]], bool]) -> int:
        return sum(1 for row in self.rows if predicate(row))


class Difference(NamedTuple):
    mean: float
    low: float
    high: float

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0


def paired(a: np.ndarray, b: np.ndarray) -> Difference:
    d = a - b
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return Difference(d.mean(), d.mean() - half, d.mean() + half)


def one(value: float) -> str:
    return f"{value:.1f}"


def signed(value: float) -> str:
    """One decimal with the sign of the unrounded value (float noise below 1e-9 is 0)."""
    return ("-" if round(value, 9) < 0 else "+") + f"{abs(value):.1f}"


def cell(values: np.ndarray) -> str:
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"


def interval(difference: Difference) -> str:
    return f"{signed(difference.low)} to {signed(difference.high)}"


def span(values: list[float]) -> str:
    """``low to high`` of one-decimal values."""
    return f"{one(min(values))} to {one(max(values))}"


MAIN = Results(REPORT / "results.csv")
THREE_SEEDS = Results(REPORT / "three-seeds" / "results.csv")
"""The digits report before issue 23 (seeds 0-2, without TRS and DVERGE; its models are not the 5-seed report's)."""
B = "baseline"


def vs_baseline(method: str, eps: float) -> Difference:
    return paired(MAIN.worst(method, eps), MAIN.worst(B, eps))


def stage_drop(method: str, before: str, after: str, eps: float = 0.1) -> float:
    """Mean over seeds of the points the strong attack ``after`` takes beyond ``before``."""
    return float((MAIN.seeds("strong", before, "inf", eps, method) - MAIN.seeds("strong", after, "inf", eps, method)).mean())


def paper_gain(attack: str, eps: float, method: str) -> float:
    return float((MAIN.seeds("paper", attack, "inf", eps, method) - MAIN.seeds("paper", attack, "inf", eps, B)).mean())


def strong_gain(eps: float, method: str) -> float:
    return vs_baseline(method, eps).mean


def not_halved(eps: float) -> list[tuple[str, str]]:
    """``(attack, method)`` of the paper-protocol gains at ``eps`` that the strong worst case does not halve."""
    return [
        (attack, method)
        for attack in ("fgsm", "pgd")
        for method in (*DEFAULT_SCALING[1:], *AUTHORS)
        if strong_gain(eps, method) >= paper_gain(attack, eps, method) / 2
    ]


def pdd_on_advt() -> list[Difference]:
    return [paired(MAIN.worst(f"{advt}+pdd", eps), MAIN.worst(advt, eps)) for advt in ("advt-fgsm", "advt-pgd") for eps in (0.05, 0.1)]


def versus(method: str, reference: str, eps: float) -> Difference:
    return paired(MAIN.worst(method, eps), MAIN.worst(reference, eps))


def peer_numbers(eps: float) -> list[str]:
    """DVERGE's and TRS's strong worst case at ``eps``, each against the baseline and against PDD+DEG (difference, interval, verdict)."""
    numbers = []
    for peer in ("dverge", "trs"):
        numbers.append(cell(MAIN.worst(peer, eps)))
        for reference in (B, "pdd+deg"):
            difference = versus(peer, reference, eps)
            numbers += [signed(difference.mean), interval(difference), "significant" if difference.significant else "not significant"]
    return numbers


def verdicts(differences: list[Difference]) -> str:
    """``none significant``, ``all significant`` or ``some significant``."""
    count = sum(difference.significant for difference in differences)
    if len(differences) == 2:
        return ("neither significant", "one significant", "both significant")[count]
    return "none significant" if count == 0 else "all significant" if count == len(differences) else "some significant"


def headline_row(name: str, values: Callable[[str], np.ndarray]) -> str:
    return f"| {name} | " + " | ".join(cell(values(method)) for method in (*DEFAULT_SCALING, *AUTHORS, *PEERS)) + " |"


def headline_results() -> int:
    return MAIN.count(lambda row: row["protocol"] == "strong" and row["attack"] in HEADLINE_ATTACKS and row["norm"] == "inf" and float(row["value"]) in (0.05, 0.1, 0.2))


def main_command_row(label: str, method: str) -> str:
    """README's table row of ``method``: mean ± std over the seeds of the main command's numbers."""
    runs = [json.loads((MAIN_COMMAND / f"seed-{seed}" / "results.json").read_text())["methods"][method] for seed in MAIN_COMMAND_SEEDS]

    def spread(values: list[float], digits: int) -> str:
        return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"

    return " | ".join([
        f"| {label}", spread([100 * run["test_accuracy"] for run in runs], 1),
        *(spread([100 * run["robust_accuracy"][eps] for run in runs], 1) for eps in ("0.05", "0.1")),
        spread([run["ambiguity_entropy"] for run in runs], 3), spread([run["gradient_angle_degrees"] for run in runs], 1),
    ]) + " |"


BUDGET = {"": Results(REPORT / "budget-check-seed0" / "results.csv"), "authors": Results(REPORT / "budget-check-seed0-authors" / "results.csv")}
"""The budget check's two evaluations: the full strong protocol on seed 0's models."""
BUDGET_HEADLINE = Results(REPORT / "budget-check-seed0-headline" / "results.csv")
"""The headline command on the same seed-0 models."""
FULL_ATTACKS = ("pgd-strong", "pgd-probs", "mora", "autoattack")
BEFORE = REPORT / "budget-check-before-issue-21"
BUDGET_BEFORE = {"": Results(BEFORE / "results.csv"), "authors": Results(BEFORE / "results-authors.csv")}
"""The budget check before issue 21 (AutoAttack on the averaged logits; the seed-0 models of the 3-seed report, whose headline is MAIN's seed 0)."""


def budget_cells() -> list[tuple[str, float, Results]]:
    """``(method, eps, results)`` of every ensemble and epsilon the full protocol finished (AutoAttack, its last stage, done)."""
    return [
        (row["method"], float(row["value"]), results)
        for results in BUDGET.values()
        for row in results.rows
        if row["protocol"] == "strong" and row["attack"] == "autoattack"
    ]


def budget_gap(method: str, eps: float, full: Results, headline: Results = BUDGET_HEADLINE) -> float:
    """Points the headline's worst case is above the full protocol's on seed 0."""
    return float(headline.worst(method, eps, seeds=(0,))[0] - full.worst(method, eps, FULL_ATTACKS, seeds=(0,))[0])


def before(method: str) -> Results:
    return BUDGET_BEFORE["authors" if method in AUTHORS else ""]


def before_full(method: str, eps: float) -> float:
    """The full protocol's worst case on seed 0 before issue 21."""
    return float(before(method).worst(method, eps, FULL_ATTACKS, seeds=(0,))[0])


def before_gap(method: str, eps: float) -> float:
    """The gap before issue 21, with the headline of the 3-seed report whose seed-0 models that check attacked."""
    return float(THREE_SEEDS.worst(method, eps, seeds=(0,))[0]) - before_full(method, eps)


def budget_row(method: str, eps: float, full: Results) -> str:
    """The budget check's row: the headline, the full protocol's stages, their gap; then the full worst case and the gap before issue 21."""
    stages = [one(full.seeds("strong", attack, "inf", eps, method, (0,))[0]) for attack in FULL_ATTACKS]
    headline = one(BUDGET_HEADLINE.worst(method, eps, seeds=(0,))[0])
    return (
        f"| {method} | {eps:g} | {headline} | " + " | ".join(stages) + f" | {signed(budget_gap(method, eps, full))} | "
        f"{one(before_full(method, eps))} | {signed(before_gap(method, eps))} |"
    )


def autoattack_images(results: Results, method: str, eps: float) -> int:
    """Images AutoAttack broke after the plain-torch stages on seed 0 (each stage counts what survived it)."""
    row = {r["attack"]: int(r["robust_correct"]) for r in results.rows if r["method"] == method and r["protocol"] == "strong" and float(r["value"]) == eps}
    return row["mora"] - row["autoattack"]


BUDGET_METHODS = ("baseline", "pdd+deg", "advt-pgd", "advt-pgd+pdd", AUTHORS[1])
"""The budget check's ensembles, in its commands' order."""


def listing(items: list[str]) -> str:
    """``a, b and c``."""
    return ", ".join(items[:-1]) + f" and {items[-1]}"


def budget_summary() -> list[str]:
    cells = budget_cells()
    earlier = [autoattack_images(before(m), m, eps) for m, eps, _ in cells]
    return [
        signed(max(budget_gap(m, eps, full) for m, eps, full in cells)), signed(max(before_gap(m, eps) for m, eps, _ in cells)),
        str(sum(autoattack_images(full, m, eps) for m, eps, full in cells)), str(sum(earlier)),
    ]


def pgd_alone_above_headline() -> list[str]:
    """At eps 0.1: how far PGD-100x5 on the averaged logits alone is above the headline's worst case, over the rows and on PDD+DEG authors'."""
    gaps = {m: float(full.seeds("strong", "pgd-strong", "inf", 0.1, m, (0,))[0] - BUDGET_HEADLINE.worst(m, 0.1, seeds=(0,))[0]) for m, eps, full in budget_cells() if eps == 0.1}
    return [span(list(gaps.values())), one(gaps[AUTHORS[1]])]


class Quote(NamedTuple):
    file: str
    text: str
    numbers: Callable[[], list[str]]


QUOTES: dict[str, Quote] = {
    # -- docs/evaluation.md, "The digits commands" and "What is measured" --------------------------
    "headline result count": Quote("docs/evaluation.md", "{} strong results (13 ensembles x 5 seeds x 3 epsilons x 3 attacks)", lambda: [str(headline_results())]),
    "full report result count": Quote(
        "docs/evaluation.md", "{} more results, the paper protocol",
        lambda: [str(len(MAIN.rows) - headline_results() - MAIN.count(lambda row: row["protocol"] == "clean"))],
    ),
    "authors' scaling clean loss": Quote(
        "docs/evaluation.md", "PDD without rescaling loses {} (PDD) and {} (PDD+DEG) points of clean accuracy on digits over 5 seeds ({} per seed)",
        lambda: [*(one(paired(MAIN.clean(B), MAIN.clean(m)).mean) for m in AUTHORS),
                 span([float(x) for m in AUTHORS for x in MAIN.clean(B) - MAIN.clean(m)])],
    ),
    # -- docs/evaluation.md, "The digits report" --------------------------------------------------
    "headline table clean": Quote("docs/evaluation.md", headline_row("clean", MAIN.clean), list),
    **{
        f"headline table eps {eps}": Quote("docs/evaluation.md", headline_row(f"strong, eps {eps}", lambda m, eps=eps: MAIN.worst(m, eps)), list)
        for eps in (0.05, 0.1, 0.2)
    },
    "pdd and deg at 0.1": Quote(
        "docs/evaluation.md",
        "PDD+DEG (the library's default scaling) is {} points above the baseline ({}), PDD alone {} ({}) and DEG alone {} ({}): {}. "
        "ADP's {} is {} ({}): MORA-style takes ADP from {} % (after both PGDs) to {} %, {} points, and PDD and PDD+DEG with the "
        "authors' scaling {} and {}",
        lambda: [
            *(text for m in ("pdd+deg", "pdd", "deg") for text in (signed(vs_baseline(m, 0.1).mean), interval(vs_baseline(m, 0.1)))),
            verdicts([vs_baseline(m, 0.1) for m in ("pdd+deg", "pdd", "deg")]),
            signed(vs_baseline("adp", 0.1).mean), "not" if not vs_baseline("adp", 0.1).significant else "significant", interval(vs_baseline("adp", 0.1)),
            one(MAIN.seeds("strong", "pgd-probs", "inf", 0.1, "adp").mean()), one(MAIN.seeds("strong", "mora", "inf", 0.1, "adp").mean()),
            *(one(stage_drop(m, "pgd-probs", "mora")) for m in ("adp", *AUTHORS)),
        ],
    ),
    "pdd and deg at 0.05 and 0.2": Quote(
        "docs/evaluation.md",
        "At eps 0.05 none of PDD, DEG and PDD+DEG differs significantly from the baseline (PDD+DEG {}, {}); ADP is {} ({}). "
        "At eps 0.2 every default-scaling ensemble is below {} %.",
        lambda: [
            signed(vs_baseline("pdd+deg", 0.05).mean), interval(vs_baseline("pdd+deg", 0.05)),
            signed(vs_baseline("adp", 0.05).mean), interval(vs_baseline("adp", 0.05)),
            "1" if not any(vs_baseline(m, 0.05).significant for m in ("pdd", "deg", "pdd+deg"))
            and max(MAIN.worst(m, 0.2).mean() for m in DEFAULT_SCALING) < 1 else "(not so)",
        ],
    ),
    "authors' scaling": Quote(
        "docs/evaluation.md",
        "loses {} (PDD) and {} (PDD+DEG) points of clean accuracy and is {} and {} points below the baseline at eps 0.05 ({}); "
        "at eps 0.1 it is level with it; its only lead is at eps 0.2 ({} and {} %), where the paper protocol shows far more "
        "(PGD 0.2: {} and {} % against {} %)",
        lambda: [
            *(one(paired(MAIN.clean(B), MAIN.clean(m)).mean) for m in AUTHORS),
            *(one(-vs_baseline(m, 0.05).mean) for m in AUTHORS),
            "significant" if all(vs_baseline(m, 0.05).significant for m in AUTHORS) else "not significant",
            *(one(MAIN.worst(m, 0.2).mean()) for m in AUTHORS),
            *(one(MAIN.seeds("paper", "pgd", "inf", 0.2, m).mean()) for m in (*AUTHORS, B)),
        ],
    ),
    "table 6": Quote(
        "docs/evaluation.md",
        "Adversarial training is the largest gain: {} (advt-fgsm) and {} (advt-pgd) points at eps 0.1, {}. "
        "**PDD does not add robustness to adversarial training under the strong protocol**: advt-fgsm+pdd minus advt-fgsm "
        "is {} and {} points at eps 0.05 and 0.1, advt-pgd+pdd minus advt-pgd {} and {}, {} (the intervals reach {} to {}).",
        lambda: [
            signed(vs_baseline("advt-fgsm", 0.1).mean), signed(vs_baseline("advt-pgd", 0.1).mean),
            "significant" if all(vs_baseline(m, 0.1).significant for m in ("advt-fgsm", "advt-pgd")) else "not significant",
            *(signed(d.mean) for d in pdd_on_advt()),
            "none significant" if not any(d.significant for d in pdd_on_advt()) else "some significant",
            *(signed(x) for x in (min(d.high for d in pdd_on_advt()), max(d.high for d in pdd_on_advt()))),
        ],
    ),
    "table 6 paper protocol": Quote(
        "docs/evaluation.md", "for advt-pgd they are significant under FGSM and BIM ({} and {} points at eps 0.1)",
        lambda: [
            signed(d.mean) if d.significant else "(not significant)"
            for d in (paired(MAIN.seeds("paper", a, "inf", 0.1, "advt-pgd+pdd"), MAIN.seeds("paper", a, "inf", 0.1, "advt-pgd")) for a in ("fgsm", "bim"))
        ],
    ),
    "paper against strong": Quote(
        "docs/evaluation.md",
        "(eps 0.1, baseline: {} % against {} %)",
        lambda: [one(MAIN.seeds("paper", a, "inf", 0.1, B).mean()) for a in ("pgd", "fgsm")],
    ),
    "strong first stage": Quote(
        "docs/evaluation.md", "The strong protocol's first stage alone (PGD-25 on the logits) is below both ({} %).",
        lambda: [one(MAIN.seeds("strong", "pgd-strong", "inf", 0.1, B).mean())],
    ),
    "gains at 0.2": Quote(
        "docs/evaluation.md",
        "Every method's paper-protocol gain at eps 0.2 is more than halved by the strong protocol (the report's FLAG rows) "
        "but {} ({} -> {} and {} -> {})",
        lambda: [
            "those of PDD and PDD+DEG with the authors' scaling under FGSM" if not_halved(0.2) == [("fgsm", m) for m in AUTHORS] else str(not_halved(0.2)),
            *(signed(x) for m in AUTHORS for x in (paper_gain("fgsm", 0.2, m), strong_gain(0.2, m))),
        ],
    ),
    "gains at 0.1": Quote(
        "docs/evaluation.md",
        "and ADP's BIM gain at 0.1 too ({} -> {}); PDD's and PDD+DEG's gains at 0.1 are *larger* under the strong protocol "
        "(PGD {} and {} -> {} and {})",
        lambda: [
            signed(paper_gain("bim", 0.1, "adp")), signed(strong_gain(0.1, "adp")),
            *(signed(paper_gain("pgd", 0.1, m)) for m in ("pdd", "pdd+deg")), *(signed(strong_gain(0.1, m)) for m in ("pdd", "pdd+deg")),
        ],
    ),
    "jsma": Quote(
        "docs/evaluation.md",
        "at gamma 0.1 ADP keeps {} % against {} % for the baseline; PDD and PDD+DEG are lower ({}, {}), with spreads of up to {} "
        "points between seeds.",
        lambda: [
            *(cell(MAIN.seeds("paper", "jsma", "0", 0.1, m)) for m in ("adp", B, "pdd", "pdd+deg")),
            one(max(MAIN.seeds("paper", "jsma", "0", 0.1, m).std(ddof=1) for m in ("adp", B, "pdd", "pdd+deg"))),
        ],
    ),
    "which attack": Quote(
        "docs/evaluation.md",
        "PGD on the log averaged probabilities takes {} more points and MORA-style {} more (most for ADP, {}, and the "
        "authors'-scaling PDD and PDD+DEG, {} and {})",
        lambda: [
            span([stage_drop(m, "pgd-strong", "pgd-probs") for m in (*DEFAULT_SCALING, *AUTHORS)]),
            span([stage_drop(m, "pgd-probs", "mora") for m in (*DEFAULT_SCALING, *AUTHORS)]),
            *(one(stage_drop(m, "pgd-probs", "mora")) for m in ("adp", *AUTHORS)),
        ],
    ),
    # -- docs/evaluation.md, the budget check -----------------------------------------------------
    **{f"budget {method} {eps:g}": Quote("docs/evaluation.md", budget_row(method, eps, full), list) for method, eps, full in budget_cells()},
    "budget what moved": Quote(
        "docs/evaluation.md",
        "the headline is at most {} points above the full protocol (before the fix, on the same rows: {}); AutoAttack, the "
        "only stage the fix changes, breaks {} images after the plain-torch stages over these rows, against {} before",
        budget_summary,
    ),
    "budget docs within": Quote(
        "docs/evaluation.md", "The headline's worst case lands within {} points of the full protocol's for every ensemble and epsilon checked.",
        lambda: [one(max(budget_gap(m, eps, full) for m, eps, full in budget_cells()))],
    ),
    "budget models moved": Quote(
        "docs/evaluation.md", "PDD+DEG's clean accuracy is {} % against {} %, and even the baseline's PGD-100x5 differs by {}",
        lambda: [
            one(BUDGET[""].clean("pdd+deg", (0,))[0]), one(BUDGET_BEFORE[""].clean("pdd+deg", (0,))[0]),
            "an image" if round(abs(BUDGET[""].seeds("strong", "pgd-strong", "inf", 0.1, B, (0,))[0] - BUDGET_BEFORE[""].seeds("strong", "pgd-strong", "inf", 0.1, B, (0,))[0]) * 3.6) == 1
            else "(not one image)",
        ],
    ),
    "budget autoattack at 0.1": Quote(
        "docs/evaluation.md", "at eps 0.1, {} images on baseline, pdd+deg, advt-pgd, advt-pgd+pdd and the authors'-scaling PDD+DEG, against {}",
        lambda: [
            listing([str(autoattack_images(BUDGET["authors" if m in AUTHORS else ""], m, 0.1)) for m in BUDGET_METHODS]),
            listing([str(autoattack_images(before(m), m, 0.1)) for m in BUDGET_METHODS]),
        ],
    ),
    "budget pgd alone": Quote(
        "docs/evaluation.md", "PGD-100x5 on the averaged logits alone is still *weaker* than the 25-step headline with MORA-style (at eps 0.1 it is {} points above the headline, {} on the authors'-scaling PDD+DEG)",
        pgd_alone_above_headline,
    ),
    "budget autoattack time before": Quote(
        "docs/evaluation.md", "AutoAttack on the survivors alone took {} minutes per ensemble at eps 0.05 on average",
        lambda: [one(np.mean([float(r["seconds"]) for r in BUDGET_BEFORE[""].rows if r["attack"] == "autoattack" and float(r["value"]) == 0.05]) / 60)],
    ),
    "readme budget": Quote(
        "README.md", "25 steps, which on seed 0 lands within {} points of the full protocol with 100 x 5 steps and AutoAttack",
        lambda: [one(max(budget_gap(m, eps, full) for m, eps, full in budget_cells()))],
    ),
    # -- README.md, "Status" ----------------------------------------------------------------------
    "readme main command baseline": Quote("README.md", main_command_row("baseline", "baseline"), list),
    "readme main command pdd+deg": Quote("README.md", main_command_row("PDD+DEG", "pdd+deg"), list),
    "readme main command rerun": Quote(
        "README.md", "PDD+DEG with seed 0 kept {} % in the digits report's run and {} % here",
        lambda: [f"{MAIN.clean('pdd+deg')[0]:.2f}", f"{100 * json.loads((MAIN_COMMAND / 'seed-0' / 'results.json').read_text())['methods']['pdd+deg']['test_accuracy']:.2f}"],
    ),
    "readme eps 0.1": Quote(
        "README.md",
        "Under that worst case at eps 0.1, PDD+DEG keeps {} % of the test images against {} % for the baseline, {} points "
        "(95 % interval {}, paired by seed: {} over 5 seeds); PDD alone {} and DEG alone {} ({}), ADP {} ({}).",
        lambda: [
            cell(MAIN.worst("pdd+deg", 0.1)), cell(MAIN.worst(B, 0.1)), signed(vs_baseline("pdd+deg", 0.1).mean), interval(vs_baseline("pdd+deg", 0.1)),
            "significant" if vs_baseline("pdd+deg", 0.1).significant else "not significant",
            signed(vs_baseline("pdd", 0.1).mean), signed(vs_baseline("deg", 0.1).mean),
            verdicts([vs_baseline(m, 0.1) for m in ("pdd", "deg")]),
            signed(vs_baseline("adp", 0.1).mean), "significant" if vs_baseline("adp", 0.1).significant else "not significant",
        ],
    ),
    "readme eps 0.05 and 0.2": Quote(
        "README.md",
        "At eps 0.05 no diversity method differs significantly from the baseline except ADP ({}), and at eps 0.2 every "
        "ensemble trained with the default scaling is below {} %.",
        lambda: [
            signed(vs_baseline("adp", 0.05).mean) if [m for m in ("adp", "pdd", "deg", "pdd+deg") if vs_baseline(m, 0.05).significant] == ["adp"] else "(not so)",
            "1" if max(MAIN.worst(m, 0.2).mean() for m in DEFAULT_SCALING) < 1 else "(not so)",
        ],
    ),
    "readme authors' scaling": Quote(
        "README.md", "PDD+DEG loses {} points of clean accuracy and is {} points below the baseline at eps 0.05.",
        lambda: [one(paired(MAIN.clean(B), MAIN.clean(AUTHORS[1])).mean), one(-vs_baseline(AUTHORS[1], 0.05).mean)],
    ),
    "readme table 6": Quote(
        "README.md",
        "Adversarial training gains far more ({} points at eps 0.1 for `advt-pgd`), and **PDD adds no significant robustness to "
        "adversarial training** under the strong protocol at any epsilon {}; its point estimates are {} points below "
        "adversarial training alone at eps 0.05 and 0.1, and {} and {} points from it at eps 0.2.",
        lambda: [
            signed(vs_baseline("advt-pgd", 0.1).mean),
            "(the paper's Table 6 reports +7 to +18 points)"
            if not any(paired(MAIN.worst(f"{a}+pdd", e), MAIN.worst(a, e)).significant for a in ("advt-fgsm", "advt-pgd") for e in (0.05, 0.1, 0.2))
            else "(not so)",
            span([-d.mean for d in pdd_on_advt()]),
            *(signed(paired(MAIN.worst(f"{a}+pdd", 0.2), MAIN.worst(a, 0.2)).mean) for a in ("advt-fgsm", "advt-pgd")),
        ],
    ),
    "pdd+deg per seed": Quote(
        "docs/evaluation.md",
        "here the per-seed differences are {} (seed 3's baseline is unusually robust, {} %)",
        lambda: [listing([signed(x) for x in MAIN.worst("pdd+deg", 0.1) - MAIN.worst(B, 0.1)]), one(MAIN.worst(B, 0.1)[3])],
    ),
    "peers which attack": Quote(
        "docs/evaluation.md",
        "For the peers: TRS loses {} more points to the log-probability PGD and {} to MORA-style, DVERGE {} and {}.",
        lambda: [one(stage_drop(m, *stages)) for m in PEERS for stages in (("pgd-strong", "pgd-probs"), ("pgd-probs", "mora"))],
    ),
    "trs after the logits": Quote(
        "docs/evaluation.md", "off TRS ({} % after PGD on the logits, {} % after all three)",
        lambda: [one(MAIN.seeds("strong", "pgd-strong", "inf", 0.1, "trs").mean()), one(MAIN.worst("trs", 0.1).mean())],
    ),
    # -- the peers in the 5-seed report ------------------------------------------------------------
    **{
        f"peers at {eps:g} {file}": Quote(
            file,
            f"At eps {eps:g} under the strong worst case, DVERGE keeps {{}} %: {{}} points from the baseline ({{}}, {{}}) and {{}} from "
            "PDD+DEG ({}, {}); TRS keeps {} %: {} points from the baseline ({}, {}) and {} from PDD+DEG ({}, {}).",
            lambda eps=eps: peer_numbers(eps),
        )
        for eps in (0.05, 0.1)
        for file in ("docs/evaluation.md", "README.md")
    },
    # -- docs/evaluation.md, the one-seed strong smoke of DVERGE ------------------------------------
    "dverge strong smoke": Quote(
        "docs/evaluation.md",
        "Worst case over all of them, all 360 test images: eps 0.05 baseline {} %, DVERGE {} %; eps 0.1 {} % and {} % ({} points); "
        "eps 0.2 {} % and {} %.",
        lambda: _dverge_smoke(),
    ),
}


def _dverge_smoke() -> list[str]:
    """The smoke's worst case per eps over every strong attack it ran, baseline then DVERGE, and the eps-0.1 difference."""
    smoke = Results(REPORT / "peers-smoke" / "strong-seed0" / "results.csv")
    attacks = HEADLINE_ATTACKS + ("apgd-ce", "apgd-dlr")
    worst = {(m, eps): smoke.worst(m, eps, attacks, seeds=(0,))[0] for m in ("baseline", "dverge") for eps in (0.05, 0.1, 0.2)}
    cells = [one(worst[m, eps]) for eps in (0.05, 0.1) for m in ("baseline", "dverge")]
    return [*cells, signed(worst["dverge", 0.1] - worst["baseline", 0.1]), one(worst["baseline", 0.2]), one(worst["dverge", 0.2])]


def _normalised(text: str) -> str:
    return re.sub(r"\s+", " ", text)


@pytest.mark.parametrize("name", list(QUOTES))
def test_a_quoted_number_is_what_the_results_give(name):
    quote = QUOTES[name]
    expected = quote.text.format(*quote.numbers())
    assert _normalised(expected) in _normalised((ROOT / quote.file).read_text()), f"{quote.file} should say: {expected}"


MNIST_REPORT = ROOT / "docs" / "mnist-report"
MNIST_METHODS = {"baseline": "baseline", "ADP": "adp", "GAL": "gal", "PDD": "pdd", "DEG": "deg", "PDD+DEG": "pdd+deg", "TRS": "trs", "DVERGE": "dverge"}


def test_the_mnist5k_numbers_are_those_of_its_report():
    """docs/evaluation.md's table of the study's seeds so far and README's sentence, from docs/mnist-report/results.csv."""
    results = Results(MNIST_REPORT / "results.csv")
    seeds = tuple(sorted({seed for (protocol, _, _, _, method, seed) in results.accuracy if protocol == "clean" and method == "baseline"}))

    def shown(values: np.ndarray) -> str:
        return one(values[0]) if len(seeds) == 1 else cell(values)

    rows = {"clean": [results.clean(method, seeds) for method in MNIST_METHODS.values()]}
    rows.update({f"{eps:g}": [results.worst(method, eps, seeds=seeds) for method in MNIST_METHODS.values()] for eps in (0.1, 0.15)})
    header = "| eps | " + " | ".join(MNIST_METHODS) + " |"
    table = "\n".join([header, "|---" * (len(MNIST_METHODS) + 1) + "|", *(f"| {eps} | " + " | ".join(shown(v) for v in values) + " |" for eps, values in rows.items())])
    assert table in (ROOT / "docs" / "evaluation.md").read_text()
    worst = {name: results.worst(method, 0.1, seeds=seeds) for name, method in MNIST_METHODS.items()}
    by_accuracy = sorted(MNIST_METHODS, key=lambda name: -worst[name].mean())
    sentence = ", ".join(f"{'the baseline' if name == 'baseline' else name} {shown(worst[name])} %" for name in by_accuracy)
    assert sentence in " ".join((ROOT / "README.md").read_text().split())


MNIST_BUDGET = Results(MNIST_REPORT / "budget-check-seed0" / "results.csv")
"""The full strong protocol on the first 100 test images of the study's seed-0 runs."""
MNIST_BUDGET_HEADLINE = Results(MNIST_REPORT / "budget-check-seed0-headline" / "results.csv")
"""The headline command on the same images and runs."""
MNIST_BUDGET_METHODS = ("baseline", "pdd", "pdd+deg", "trs", "dverge")


def mnist_budget_gap(method: str, eps: float) -> float:
    return budget_gap(method, eps, MNIST_BUDGET, MNIST_BUDGET_HEADLINE)


def mnist_budget_rows() -> list[str]:
    """docs/evaluation.md's budget-check table: headline, the full protocol's stages (each the worst case so far), the gap."""
    rows = []
    for method in MNIST_BUDGET_METHODS:
        for eps in (0.1, 0.15):
            stages = [one(MNIST_BUDGET.seeds("strong", attack, "inf", eps, method, (0,))[0]) for attack in FULL_ATTACKS]
            headline = one(MNIST_BUDGET_HEADLINE.worst(method, eps, seeds=(0,))[0])
            rows.append(f"| {method} | {eps:g} | {headline} | " + " | ".join(stages) + f" | {signed(mnist_budget_gap(method, eps))} |")
    return rows


def test_the_mnist5k_budget_check_is_that_of_its_result_files():
    """The table, the largest gap, and the one-core hours of each protocol, from docs/mnist-report/budget-check-seed0*/."""
    text = _normalised((ROOT / "docs" / "evaluation.md").read_text())
    for row in mnist_budget_rows():
        assert _normalised(row) in text, row
    gaps = {(method, eps): mnist_budget_gap(method, eps) for method in MNIST_BUDGET_METHODS for eps in (0.1, 0.15)}
    (method, eps), largest = max(gaps.items(), key=lambda item: item[1])
    assert _normalised(f"up to {signed(largest)} points ({method} at eps {eps:g})") in text

    def hours(results: Results) -> str:
        return f"{results.strong_seconds() / 3600:.1f}"

    assert _normalised(f"{hours(MNIST_BUDGET)} hours of one core against {hours(MNIST_BUDGET_HEADLINE)}") in text


def test_the_mnist5k_prose_numbers_are_those_of_its_report():
    """docs/evaluation.md's per-seed ranges at eps 0.1 and clean-accuracy costs, from docs/mnist-report/results.csv."""
    results = Results(MNIST_REPORT / "results.csv")
    seeds = (0, 1, 2)
    text = _normalised((ROOT / "docs" / "evaluation.md").read_text())

    def spread(method: str) -> str:
        worst = results.worst(method, 0.1, seeds=seeds)
        return f"{one(worst.min())} to {one(worst.max())} %"

    for phrase in (f"({spread('dverge')} per seed at eps 0.1", f"the baseline swings from {spread('baseline')}",
                   f"ADP from {spread('adp')}", f"PDD+DEG ({spread('pdd+deg')})"):
        assert _normalised(phrase) in text, phrase
    clean = {method: results.clean(method, seeds).mean() for method in ("baseline", "pdd", "pdd+deg")}
    cost = [one(clean["baseline"] - clean[method]) for method in ("pdd", "pdd+deg")]
    assert _normalised(f"PDD costs {cost[0]} points of clean accuracy and PDD+DEG {cost[1]}") in text


def test_the_mnist5k_diversity_numbers_are_those_of_its_analyses():
    """docs/evaluation.md's diversity paragraph, from docs/mnist-study/diversity-s*/diversity/diversity.json."""
    analyses = [json.loads((ROOT / "docs" / "mnist-study" / f"diversity-s{seed}" / "diversity" / "diversity.json").read_text()) for seed in (0, 1, 2)]

    def values(method: str, *path: str) -> np.ndarray:
        found = []
        for analysis in analyses:
            entry = analysis["methods"][method]
            for key in path:
                entry = entry[key]
            found.append(entry)
        return np.array(found, dtype=float)

    def shown(method: str, *path: str, decimals: int = 3) -> str:
        v = values(method, *path)
        return f"{v.mean():.{decimals}f} ± {v.std(ddof=1):.{decimals}f}"

    text = _normalised((ROOT / "docs" / "evaluation.md").read_text())
    score, entropy, angle = ("discrimination_score", "mean"), ("ambiguity_entropy",), ("gradient_angle_degrees", "mean")
    shared = [analysis["images_correct_for_all_methods"] for analysis in analyses]
    for phrase in (
        f"({min(shared)} to {max(shared)} of the seed's 1,000)",
        f"(mean {shown('pdd', *score)} against the baseline's {shown('baseline', *score)}; PDD+DEG {shown('pdd+deg', *score)})",
        f"({shown('pdd', *entropy)} against {shown('baseline', *entropy)})",
        f"({shown('pdd', *angle, decimals=1)} against {shown('baseline', *angle, decimals=1)} degrees; DEG {shown('deg', *angle, decimals=1)})",
        f"({shown('gal', *angle, decimals=1)} degrees)",
        f"the baseline's E ({shown('dverge', *entropy)}) and an L_F close to it ({shown('dverge', *score)})",
    ):
        assert _normalised(phrase) in text, phrase
    assert shown("dverge", *entropy) == shown("baseline", *entropy)
    assert round(values("pdd", *score).mean() / values("baseline", *score).mean()) == 8  # "about eightfold"
    assert 1.8 < values("pdd", *entropy).mean() / values("baseline", *entropy).mean() < 2.2  # "doubles"
    assert values("gal", *angle).mean() == max(values(m, *angle).mean() for m in analyses[0]["methods"])  # "the most dispersed"


def test_the_mnist5k_sweep_numbers_are_those_of_its_report():
    """docs/evaluation.md's sweep paragraph (PGD-25 on the averaged logits at eps 0.2 and 0.3), from docs/mnist-report/results.csv."""
    results = Results(MNIST_REPORT / "results.csv")
    methods = list(MNIST_METHODS.values())

    def at(method: str, eps: float) -> np.ndarray:
        return results.seeds("strong", "pgd-strong", "inf", eps, method, (0, 1, 2))

    others = [m for m in methods if m not in ("dverge", "trs")]
    highest = max(others, key=lambda m: at(m, 0.2).mean())
    assert highest == "adp"
    assert all(at(m, 0.3).max() == 0 for m in methods if m != "dverge")
    text = _normalised((ROOT / "docs" / "evaluation.md").read_text())
    phrase = (f"every method is at 0.0 % but DVERGE, at {cell(at('dverge', 0.3))} %; at 0.2 DVERGE keeps {cell(at('dverge', 0.2))} % "
              f"and TRS {cell(at('trs', 0.2))} %, every other method at most ADP's {cell(at('adp', 0.2))} %")
    assert _normalised(phrase) in text, phrase


def test_the_mnist5k_jsma_sample_and_the_budget_probe_are_those_of_their_files():
    """docs/evaluation.md's JSMA sample (jsma-seed0/) and the AutoAttack-at-the-headline's-budget probe (budget-check-seed0-probe/)."""
    text = _normalised((ROOT / "docs" / "evaluation.md").read_text())
    jsma = Results(MNIST_REPORT / "jsma-seed0" / "results.csv")

    def at(method: str, gamma: float) -> float:
        return jsma.seeds("paper", "jsma", "0", gamma, method, (0,))[0]

    assert [at(m, 0.3) for m in ("baseline", "dverge", "adp")] == [2.0, 2.0, 4.0]
    assert sorted(round(at(m, 0.3)) for m in ("pdd", "pdd+deg")) == [10, 12]
    assert sorted(round(at(m, 0.3)) for m in ("deg", "trs", "gal")) == [22, 22, 24]
    assert max(at(m, 0.6) for m in MNIST_METHODS.values()) == 6.0
    minutes = sum(float(row["seconds"]) for row in jsma.rows if row["attack"] == "jsma") / 60
    assert _normalised(f"{minutes:.0f} core-minutes") in text
    probe = Results(MNIST_REPORT / "budget-check-seed0-probe" / "results.csv")
    taken = {(m, eps): probe.seeds("strong", "mora", "inf", eps, m, (0,))[0] - probe.seeds("strong", "autoattack", "inf", eps, m, (0,))[0]
             for m in MNIST_BUDGET_METHODS for eps in (0.1, 0.15)}
    assert max(taken.values()) == taken["trs", 0.15] == 3.0 and taken["pdd+deg", 0.1] == 1.0
    assert "at most 3 more of the 100 images from any ensemble (TRS at eps 0.15; PDD+DEG at 0.1: one)" in text


MNIST_RERUN = Results(MNIST_REPORT / "rerun-seed0" / "results.csv")
"""The seed-0 chunk rerun on another CPU (docs/mnist-study-rerun/, merged into docs/mnist-report/rerun-seed0/)."""


def mnist_rerun_quotes() -> dict[str, str]:
    """docs/evaluation.md's rerun paragraph: its table and numbers, from the study's and the rerun's results.csv."""
    study, seeds = Results(MNIST_REPORT / "results.csv"), (0, 1, 2)

    def compared(values: np.ndarray, rerun: float) -> str:
        return f"{one(values[0])} / {one(rerun)} / {one(values.min())} to {one(values.max())}"

    rows = []
    outside = {0.1: 0, 0.15: 0}
    for name, method in MNIST_METHODS.items():
        cells = [compared(study.clean(method, seeds), MNIST_RERUN.clean(method, (0,))[0])]
        for eps in outside:
            values, rerun = study.worst(method, eps, seeds=seeds), MNIST_RERUN.worst(method, eps, seeds=(0,))[0]
            cells.append(compared(values, rerun))
            outside[eps] += not values.min() <= rerun <= values.max()
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(["| method | clean | eps 0.1 | eps 0.15 |", "|---|---|---|---|", *rows])

    def rerun_gain(method: str, eps: float) -> str:
        return signed(MNIST_RERUN.worst(method, eps, seeds=(0,))[0] - MNIST_RERUN.worst("baseline", eps, seeds=(0,))[0])

    def four(method: str, eps: float) -> str:
        draws = [np.concatenate([study.worst(m, eps, seeds=seeds), MNIST_RERUN.worst(m, eps, seeds=(0,))]) for m in (method, "baseline")]
        difference = paired(*draws)
        return f"{signed(difference.mean)}, {interval(difference)}"

    return {
        "table": table,
        "outside_01": str(outside[0.1]),
        "outside_015": str(outside[0.15]),
        "dverge_gain_01": rerun_gain("dverge", 0.1),
        "dverge_gain_015": rerun_gain("dverge", 0.15),
        "pdd_gain_015": rerun_gain("pdd", 0.15),
        "trs_gain_015": rerun_gain("trs", 0.15),
        "adp_study_gain": one(paired(study.worst("adp", 0.1, seeds=seeds), study.worst("baseline", 0.1, seeds=seeds)).mean),
        "adp_rerun_gain": rerun_gain("adp", 0.1),
        "pdd_four": four("pdd", 0.1),
        "trs_four": four("trs", 0.1),
        "gal_four": four("gal", 0.1),
        "trs_four_02": four("trs", 0.2),
    }


def test_the_mnist5k_rerun_numbers_are_those_of_its_results():
    """The rerun paragraph of docs/evaluation.md, from docs/mnist-report/results.csv and rerun-seed0/results.csv."""
    text = _normalised((ROOT / "docs" / "evaluation.md").read_text())
    quotes = mnist_rerun_quotes()
    assert _normalised(quotes.pop("table")) in text
    sentences = [
        "it did here for {outside_01} of the eight methods at eps 0.1 and {outside_015} at 0.15",
        "{dverge_gain_01} points above the rerun's baseline at eps 0.1 and {dverge_gain_015} at 0.15",
        "at eps 0.15 ({pdd_gain_015} and {trs_gain_015} points)",
        "ADP's lead at eps 0.1 (+{adp_study_gain} points over the three seeds, never significant) is {adp_rerun_gain} in the rerun",
        "at eps 0.1 significant too ({pdd_four}; {trs_four}) and GAL's loss ({gal_four}), and TRS's at eps 0.2 no longer ({trs_four_02})",
    ]
    for sentence in sentences:
        assert _normalised(sentence.format(**quotes)) in text, sentence.format(**quotes)
    # "DVERGE is first at every epsilon" of the rerun's headline.
    for eps in (0.1, 0.15, 0.2):
        rerun = {method: MNIST_RERUN.worst(method, eps, seeds=(0,))[0] for method in MNIST_METHODS.values()}
        assert max(rerun, key=rerun.__getitem__) == "dverge", (eps, rerun)


MNIST_RERUN_BUDGET = Results(MNIST_REPORT / "rerun-seed0-budget-check" / "results.csv")
MNIST_RERUN_BUDGET_HEADLINE = Results(MNIST_REPORT / "rerun-seed0-budget-check-headline" / "results.csv")
"""The budget check at eps 0.1 on the rerun's seed-0 models (the baseline and PDD+DEG): the full protocol, the headline."""


def mnist_rerun_budget_quotes() -> dict[str, str]:
    """docs/evaluation.md's paragraph on the rerun's budget gap, from its result files and the study's budget check."""

    def minutes(results: Results) -> str:
        return f"{results.strong_seconds() / 60:.0f}"

    quotes = {"full_minutes": minutes(MNIST_RERUN_BUDGET), "headline_minutes": minutes(MNIST_RERUN_BUDGET_HEADLINE)}
    for method in ("baseline", "pdd+deg"):
        key = method.replace("+", "_")
        quotes[f"{key}_gap"] = signed(budget_gap(method, 0.1, MNIST_RERUN_BUDGET, MNIST_RERUN_BUDGET_HEADLINE))
        quotes[f"{key}_headline"] = f"{MNIST_RERUN_BUDGET_HEADLINE.worst(method, 0.1, seeds=(0,))[0]:.0f}"
        quotes[f"{key}_full"] = f"{MNIST_RERUN_BUDGET.worst(method, 0.1, FULL_ATTACKS, seeds=(0,))[0]:.0f}"
        quotes[f"{key}_study_gap"] = signed(mnist_budget_gap(method, 0.1))
        quotes[f"{key}_aa"] = str(autoattack_images(MNIST_RERUN_BUDGET, method, 0.1))
    return quotes


def test_the_mnist5k_rerun_budget_gap_is_that_of_its_result_files():
    text = _normalised((ROOT / "docs" / "evaluation.md").read_text())
    q = mnist_rerun_budget_quotes()
    for sentence in (
        f"{q['full_minutes']} core-minutes for the full protocol, {q['headline_minutes']} for the headline",
        f"The headline is {q['baseline_gap']} points above the full protocol on the baseline ({q['baseline_headline']} against "
        f"{q['baseline_full']} %; {q['baseline_study_gap']} on the study's seed 0) and {q['pdd_deg_gap']} on PDD+DEG "
        f"({q['pdd_deg_headline']} against {q['pdd_deg_full']} %; {q['pdd_deg_study_gap']}); AutoAttack took {q['baseline_aa']} and "
        f"{q['pdd_deg_aa']} of those images",
    ):
        assert _normalised(sentence) in text, sentence
    # "The gap is there on both draws": the headline above the full protocol for both ensembles on the rerun too.
    assert all(budget_gap(m, 0.1, MNIST_RERUN_BUDGET, MNIST_RERUN_BUDGET_HEADLINE) > 0 for m in ("baseline", "pdd+deg"))


MNIST_STEPS_PROBE = {budget: Results(MNIST_REPORT / "rerun-seed0-steps-probe" / budget / "results.csv") for budget in ("25x1", "100x1", "100x5")}
"""The headline's three attacks on the rerun's seed-0 models at three budgets (steps x starts), first 100 test images."""


def steps_probe_worst(budget: str, method: str, eps: float) -> float:
    return float(MNIST_STEPS_PROBE[budget].worst(method, eps, seeds=(0,))[0])


def steps_probe_gap(budget: str, method: str, eps: float) -> float:
    """Points ``budget``'s worst case is above 100 x 5's (the full protocol without AutoAttack)."""
    return steps_probe_worst(budget, method, eps) - steps_probe_worst("100x5", method, eps)


def test_the_mnist5k_steps_probe_is_that_of_its_result_files():
    """docs/evaluation.md's probe of the headline's budget: its table, largest gaps and minutes, from rerun-seed0-steps-probe/."""
    text = _normalised((ROOT / "docs" / "evaluation.md").read_text())
    cells = [(method, eps) for method in MNIST_METHODS.values() for eps in (0.1, 0.15)]
    for method, eps in cells:
        worst = " | ".join(one(steps_probe_worst(budget, method, eps)) for budget in MNIST_STEPS_PROBE)
        row = f"| {method} | {eps:g} | {worst} | {signed(steps_probe_gap('25x1', method, eps))} | {signed(steps_probe_gap('100x1', method, eps))} |"
        assert _normalised(row) in text, row
    largest = {}
    for budget in ("25x1", "100x1"):
        gaps = {cell: steps_probe_gap(budget, *cell) for cell in cells}
        (method, eps), largest[budget] = max(gaps.items(), key=lambda item: item[1])
        above = sum(gap > 0 for gap in gaps.values())
        sentence = (
            f"{budget.replace('x', ' x ')} is above 100 x 5 in {above} of the {len(cells)} cells, "
            f"by up to {signed(largest[budget])} points ({method} at eps {eps:g}"
        )
        assert _normalised(sentence) in text, sentence
        assert f"{np.mean(list(gaps.values())):.1f} on average" in text, budget
    readme = _normalised((ROOT / "README.md").read_text())
    sentence = f"comes within {largest['100x1']:.0f} points of 100 steps x 5 starts, where 25 steps was up to {largest['25x1']:.0f} above"
    assert _normalised(sentence) in readme, sentence
    minutes = " / ".join(f"{results.strong_seconds() / 60:.0f}" for results in MNIST_STEPS_PROBE.values())
    assert _normalised(f"{minutes} core-minutes") in text, minutes
    # 25 x 1 and 100 x 5 on the baseline and PDD+DEG at eps 0.1 repeat the rerun's budget check (headline, and the
    # full protocol's stages before AutoAttack): the models and attacks are the same, bit for bit.
    for method in ("baseline", "pdd+deg"):
        for attack in HEADLINE_ATTACKS:
            stage = ("strong", attack, "inf", 0.1, method, (0,))
            assert MNIST_STEPS_PROBE["25x1"].seeds(*stage)[0] == MNIST_RERUN_BUDGET_HEADLINE.seeds(*stage)[0], stage
            assert MNIST_STEPS_PROBE["100x5"].seeds(*stage)[0] == MNIST_RERUN_BUDGET.seeds(*stage)[0], stage
