"""The evaluation report: Markdown tables laid out like the paper's (methods as columns, attacks
and parameters as rows) and PNG figures, generated from the results alone (no attack is run).

A cell aggregates the results of every training seed evaluated for it (one result per method
per seed): with one seed it reads ``accuracy (conditional accuracy)`` as before, with several
``mean ± std`` of the accuracy. Differences between methods are paired by seed, since one seed
means one split and one set of initial weights for every method.

``REPORT_SECTIONS`` is the report, in order: each section is a function of the results, the
evaluation's config and its directory (where it may save figures), returning Markdown, or ""
when it has nothing to show. Further analyses plug in by appending their section function,
e.g. the diversity analysis (Table 1, Figs. 1-3) as ``diversity_section``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from ..run_dir import save_bytes, save_text
from .attacks import PAPER_ATTACKS, STRONG_ATTACKS, TRANSFER_ATTACKS
from .diversity_analysis import MARKDOWN as DIVERSITY_MARKDOWN

REPORT = "report.md"
DIVERSITY_DIR = "diversity"
"""Where ``evaluate.py`` writes the diversity analysis (``--attacks diversity``), under its out dir."""
Results = dict[str, dict[str, Any]]
Section = Callable[[Results, dict[str, Any], Path], str]
Seed = int | None
"""A result's training seed; ``None`` for a result written before seeds were recorded."""
Cell = dict[Seed, dict[str, Any]]
"""What one table cell aggregates: one result (or a dict with at least ``accuracy``) per training seed."""
Row = tuple[str, str, dict[str, Cell]]
"""A table row: its label, its parameter and its cell for each method."""

NAMES = {"fgsm": "FGSM", "bim": "BIM", "pgd": "PGD", "jsma": "JSMA", "cw": "C&W"}
"""The paper protocol's attack names; :func:`_name` gives the strong attacks' names, with their flags."""
NORMS = {"inf": "L_inf", "2": "L_2", "0": "L_0"}
ADVT_ORDER = ("advt-fgsm", "advt-fgsm+pdd", "advt-pgd", "advt-pgd+pdd")


def write_report(out_dir: Path, results: Results, config: dict[str, Any]) -> Path:
    """Write ``report.md`` (and its figures) into ``out_dir`` from ``results`` (as in results.json)."""
    sections = [section(results, config, out_dir) for section in REPORT_SECTIONS]
    path = out_dir / REPORT
    save_text(path, "\n\n".join(section for section in sections if section) + "\n")
    return path


def _methods(results: Results) -> list[str]:
    """Method labels in the order first evaluated (clean results come first)."""
    return list(dict.fromkeys(result["method"] for result in results.values()))


def _name(attack: str, flags: dict[str, Any]) -> str:
    """An attack's display name; the strong attacks' carry their steps and restarts from the flags."""
    steps, restarts = flags["strong_steps"], flags["strong_restarts"]
    strong = {
        "pgd-strong": f"PGD-{steps}x{restarts} logits",
        "pgd-probs": f"then PGD-{steps}x{restarts} log-probs",
        "mora": f"then MORA-style {steps}x5",
        "apgd-ce": f"then APGD-CE-{steps}x{restarts}",
        "apgd-dlr": f"then APGD-DLR-{steps}x{restarts}",
        "autoattack": "then AutoAttack",
    }
    return strong.get(attack, NAMES.get(attack, attack))


def _collect(results: Results, **fields: Any) -> Cell:
    """The results matching ``fields``, one per training seed (the first found, e.g. of several surrogates)."""
    cell: Cell = {}
    for result in results.values():
        if all(result.get(key) == value for key, value in fields.items()):
            cell.setdefault(result.get("train_seed"), result)
    return cell


def _format(cell: Cell) -> str:
    """One cell in %: ``accuracy (conditional)`` from one seed, ``mean ± std`` (ddof 1) of the accuracy from several."""
    if not cell:
        return "-"
    accuracies = [100 * result["accuracy"] for result in cell.values()]
    if len(cell) == 1:
        conditional = next(iter(cell.values())).get("conditional_accuracy")
        return f"{accuracies[0]:.1f}" + ("" if conditional is None else f" ({100 * conditional:.1f})")
    return f"{np.mean(accuracies):.1f} ± {np.std(accuracies, ddof=1):.1f}"


def _mean(cell: Cell) -> float | None:
    """Mean accuracy over the seeds, in [0, 1]."""
    return float(np.mean([result["accuracy"] for result in cell.values()])) if cell else None


def _worst_case(results: Results, eps: float, method: str) -> Cell:
    """Per seed, the accuracy counting an image only when it survives every strong L_inf attack at ``eps``."""
    masks: dict[Seed, list[np.ndarray]] = {}
    for r in results.values():
        if r["protocol"] == "strong" and r["norm"] == "inf" and r["value"] == eps and r["method"] == method:
            masks.setdefault(r.get("train_seed"), []).append(np.asarray(r["robust"], dtype=bool))
    return {seed: {"accuracy": float(np.logical_and.reduce(seed_masks).mean())} for seed, seed_masks in masks.items()}


def _points(value: float) -> str:
    """Signed accuracy points to one decimal, with the sign of the unrounded value.

    An interval end of -0.03 prints "-0.0", so "-2.8 to -0.0" reads as excluding 0, as it does
    (rounding to one decimal first would print "+0.0" beside the verdict "significant"). A mean
    of float differences that cancel (-1e-15 from +10, -10, 0) is 0: the sign is taken after
    rounding to 9 decimals, far below any difference of accuracies over fewer than 10^9 images.
    """
    return f"{'-' if round(value, 9) < 0 else '+'}{abs(value):.1f}"


@dataclass(frozen=True)
class Difference:
    """A method's accuracy minus a reference's, in points, paired by training seed."""

    mean: float
    half_width: float | None
    """Of the 95 % t-interval around ``mean``; ``None`` from one seed, which gives no interval."""
    seeds: int

    @property
    def significant(self) -> bool:
        """Whether the interval excludes 0."""
        return self.half_width is not None and abs(self.mean) > self.half_width

    def interval(self) -> str:
        if self.half_width is None:
            return "-"
        return f"{_points(self.mean - self.half_width)} to {_points(self.mean + self.half_width)}"

    def verdict(self) -> str:
        if self.half_width is None:
            return "one seed: a smoke test"
        return "significant" if self.significant else "not significant"

    def sentence(self, where: str, method: str, reference: str) -> str:
        """``where`` (e.g. "At eps 0.1 under the strong worst case"), the difference in words."""
        head = f"{where}, {method} is {_points(self.mean)} points from {reference}"
        if self.half_width is None:
            return f"{head} on one seed: a smoke test, not a result."
        return f"{head} (95 % interval {self.interval()} over {self.seeds} seeds): {self.verdict()}."


def _difference(cell: Cell, reference: Cell) -> Difference | None:
    """``cell`` minus ``reference`` over the seeds both have."""
    seeds = [seed for seed in cell if seed in reference]
    if not seeds:
        return None
    points = np.array([100 * (cell[seed]["accuracy"] - reference[seed]["accuracy"]) for seed in seeds])
    if len(points) == 1:
        return Difference(float(points[0]), None, 1)
    half_width = stats.t.ppf(0.975, len(points) - 1) * points.std(ddof=1) / np.sqrt(len(points))
    return Difference(float(points.mean()), float(half_width), len(points))


def _difference_rows(rows: list[Row], pairs: list[tuple[str, str]]) -> list[list[str]]:
    """For each row and each (method, reference) pair present in it: the paired difference, its interval, significance."""
    table = []
    for label, parameter, cells in rows:
        for method, reference in pairs:
            difference = _difference(cells.get(method, {}), cells.get(reference, {}))
            if difference is not None:
                table.append([label, parameter, f"{method} - {reference}", _points(difference.mean), difference.interval(), difference.verdict()])
    return table


def _seeds(results: Results) -> list[Seed]:
    """The training seeds present, in order (``None`` for results without one)."""
    return sorted({r.get("train_seed") for r in results.values()}, key=lambda seed: -1 if seed is None else seed)


def _over_seeds(results: Results, protocols: tuple[str, ...]) -> str:
    """The sentence saying over how many training seeds a section's cells are."""
    seeds = _seeds({key: r for key, r in results.items() if r["protocol"] in protocols})
    if len(seeds) < 2:
        return "One training seed: each cell is accuracy (conditional accuracy) in %."
    return f"Over {len(seeds)} training seeds: each cell is mean ± std (ddof 1) over the seeds of the accuracy over all images, in %."


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _values(results: Results, protocol: str, attack: str, norm: str | None = None) -> list[float]:
    return sorted({r["value"] for r in results.values() if r["protocol"] == protocol and r["attack"] == attack and (norm is None or r["norm"] == norm)})


def _strong_attacks(results: Results) -> list[str]:
    """The strong attacks present, in the order they run (:data:`~.attacks.STRONG_ATTACKS`; any other after them)."""
    found = {r["attack"] for r in results.values() if r["protocol"] == "strong"}
    return [a for a in STRONG_ATTACKS if a in found] + sorted(found - set(STRONG_ATTACKS))


def _strong_epsilons(results: Results, flags: dict[str, Any]) -> list[float]:
    """The L_inf epsilons of the strong protocol, the paper protocol's; the strong sweep's others belong to the sweep."""
    protocol_epsilons = {value for key in ("fgsm_eps", "bim_eps", "pgd_eps") for value in flags[key]}
    found = {r["value"] for r in results.values() if r["protocol"] == "strong" and r["norm"] == "inf"}
    return sorted(eps for eps in found if eps in protocol_epsilons or not protocol_epsilons)


def provenance_section(results: Results, config: dict[str, Any], out_dir: Path) -> str:
    flags = config["flags"]
    seeds = _seeds(results)
    seed_text = "not recorded (one seed)" if seeds == [None] else ", ".join(str(seed) for seed in seeds)
    lines = [
        "# Robustness evaluation",
        "",
        *_commands(config),
        f"Targets: {', '.join(f'`{d}`' for d in flags['run_dirs'])}; data set `{flags['dataset']}`; "
        f"{flags['limit'] if flags['limit'] else 'all'} test images; attack seed {flags['seed']}.",
        f"Training seeds: {seed_text}.",
        "Versions: " + ", ".join(f"{name} {version}" for name, version in config["versions"].items()) + ".",
        "",
        "Every cell is robust accuracy in % over **all** evaluated test images of each training seed's own test split "
        "(an image counts when it is classified correctly before and after the attack). With one seed, the figure in "
        "parentheses is over only the images classified correctly before the attack, the figure the authors' code "
        "reports; with several, a cell is the mean ± std over the seeds of the accuracy over all images, and a "
        "difference between methods is paired by seed (same split, same initial weights) with a 95 % t-interval. "
        "The attacked model is the whole ensemble; its output is the members' **averaged probabilities** (the paper's "
        "ensemble and the authors' code) in the paper protocol and in transfer attacks, the members' **averaged "
        "logits** (or the log of their averaged probabilities, or the members themselves, where the strong attack's "
        "name says so) in the strong protocol; accuracy is always that of the averaged probabilities.",
    ]
    return "\n".join(lines)


def _commands(config: dict[str, Any]) -> list[str]:
    """The command line(s) of the results: the evaluation's, or each merged part's (``examples/merge_evaluations.py``)."""
    parts = config.get("merged_from", [config])
    lines = [_command(part["argv"], [session["argv"] for session in part["sessions"]]) for part in parts]
    if "merged_from" in config:
        lines.insert(0, f"Merged by `python examples/merge_evaluations.py` from {len(parts)} evaluations:")
    return lines


def _command(argv: list[str], resumes: list[list[str]]) -> str:
    """One evaluation's command line; a resume that changed the flags (say, added attacks) is shown too."""
    line = f"Command: `python examples/evaluate.py {' '.join(argv)}`"
    if not resumes:
        return line
    changed = [f"`python examples/evaluate.py {' '.join(resume)}`" for resume in resumes if resume != argv]
    return line + f" (resumed {len(resumes)} times" + (f"; as {', then '.join(changed)}" if changed else "") + ")"


def headline_section(results: Results, config: dict[str, Any], out_dir: Path) -> str:
    """Clean and strong worst-case accuracy at the data set's main epsilons, and each method's paired difference from the baseline."""
    methods = _methods(results)
    rows = _headline_rows(results, config, methods)
    if not any(cell for _, _, cells in rows for cell in cells.values()):
        return ""
    parts = [
        "## Headline",
        "",
        _over_seeds(results, ("clean", "strong")) + " \"strong, worst case\": an image counts only when it survives every "
        "strong attack at that eps, per seed.",
        "",
        _table(["", "eps"] + methods, [[label, parameter] + [_format(cells[m]) for m in methods] for label, parameter, cells in rows]),
    ]
    pairs = [(m, "baseline") for m in methods if m != "baseline"] if "baseline" in methods else []
    differences = _difference_rows(rows, pairs)
    if differences:
        sentences = []
        for _, parameter, cells in rows[1:]:
            for method, _ in pairs:
                difference = _difference(cells[method], cells["baseline"])
                if difference is not None:
                    sentences.append(difference.sentence(f"At eps {parameter} under the strong worst case", method, "baseline"))
        parts += [
            "",
            "Difference from the baseline in accuracy points, paired by training seed; \"significant\" when the 95 % "
            "t-interval excludes 0.",
            "",
            _table(["", "eps", "Difference", "Points", "95 % interval", "Verdict"], differences),
        ]
        if sentences:
            parts += ["", " ".join(sentences)]
    return "\n".join(parts)


def _headline_rows(results: Results, config: dict[str, Any], methods: list[str]) -> list[Row]:
    """Clean accuracy, then the strong worst case at each of the paper protocol's PGD epsilons that the strong protocol ran."""
    strong = set(_strong_epsilons(results, config["flags"]))
    rows: list[Row] = [("clean", "-", {m: _collect(results, protocol="clean", method=m) for m in methods})]
    rows += [("strong, worst case", f"{eps:g}", {m: _worst_case(results, eps, m) for m in methods}) for eps in config["flags"]["pgd_eps"] if eps in strong]
    return rows


PEERS = ("trs", "dverge")
"""The defences that superseded the paper's comparisons (TRS, DVERGE), set against PDD+DEG."""


def peers_section(results: Results, config: dict[str, Any], out_dir: Path) -> str:
    """Each peer's paired difference from PDD+DEG under the headline's rows: where the paper's method stands against them."""
    methods = _methods(results)
    pairs = [(peer, "pdd+deg") for peer in PEERS if peer in methods and "pdd+deg" in methods]
    differences = _difference_rows(_headline_rows(results, config, methods), pairs) if pairs else []
    if not differences:
        return ""
    return "\n".join([
        "## TRS and DVERGE against PDD+DEG",
        "",
        "The headline's rows again, each peer minus PDD+DEG in accuracy points, paired by training seed; \"significant\" "
        "when the 95 % t-interval excludes 0.",
        "",
        _table(["", "eps", "Difference", "Points", "95 % interval", "Verdict"], differences),
    ])


def advt_section(results: Results, config: dict[str, Any], out_dir: Path) -> str:
    """Table 6: adversarial training with and without PDD, under the paper protocol and the strong one."""
    found = _methods(results)
    advt = [m for m in ADVT_ORDER if m in found] + [m for m in found if m.startswith("advt-") and m not in ADVT_ORDER]
    if not advt:
        return ""
    flags = config["flags"]
    methods = (["baseline"] if "baseline" in found else []) + advt
    rows: list[Row] = [("No Attack", "-", {m: _collect(results, protocol="clean", method=m) for m in methods})]
    for attack in ("fgsm", "bim", "pgd"):
        for eps in sorted(set(flags[f"{attack}_eps"]) & set(_values(results, "paper", attack, "inf"))):
            rows.append((f"{NAMES[attack]} (paper)", f"{eps:g}", {m: _collect(results, protocol="paper", attack=attack, norm="inf", value=eps, method=m) for m in methods}))
    strong_epsilons = _strong_epsilons(results, flags)
    rows += [("strong, worst case", f"{eps:g}", {m: _worst_case(results, eps, m) for m in methods}) for eps in strong_epsilons]
    pairs = [(f"advt-{x}+pdd", f"advt-{x}") for x in ("fgsm", "pgd") if f"advt-{x}+pdd" in found and f"advt-{x}" in found]
    parts = [
        "## Table 6: adversarial training with and without PDD",
        "",
        _over_seeds({k: r for k, r in results.items() if r["method"] in methods}, ("clean", "paper", "strong")),
        "",
        _table(["Attacks", "eps"] + methods, [[label, parameter] + [_format(cells[m]) for m in methods] for label, parameter, cells in rows]),
    ]
    differences = _difference_rows(rows, pairs)
    if differences:
        parts += ["", "With PDD minus without, in accuracy points, paired by training seed.", "", _table(["Attacks", "eps", "Difference", "Points", "95 % interval", "Verdict"], differences)]
    worst_rows = rows[len(rows) - len(strong_epsilons):]
    sentences = [_pdd_sentence(with_pdd, without, worst_rows) for with_pdd, without in pairs]
    if any(sentences):
        parts += ["", " ".join(s for s in sentences if s)]
    return "\n".join(parts)


def _pdd_sentence(with_pdd: str, without: str, worst_rows: list[Row]) -> str:
    """Whether PDD adds robustness to ``without`` under the strong protocol, in one sentence ("" without strong results)."""
    differences = {parameter: _difference(cells[with_pdd], cells[without]) for _, parameter, cells in worst_rows}
    differences = {eps: d for eps, d in differences.items() if d is not None}
    if not differences:
        return ""
    if all(d.half_width is None for d in differences.values()):
        return f"With one training seed it cannot be told whether PDD adds robustness to {without} under the strong protocol (a smoke test, not a result)."
    gains = [eps for eps, d in differences.items() if d.significant and d.mean > 0]
    losses = [eps for eps, d in differences.items() if d.significant and d.mean < 0]
    sentence = (f"Under the strong protocol PDD adds significant robustness to {without} at eps {', '.join(gains)}" if gains
                else f"Under the strong protocol PDD adds no significant robustness to {without} at any eps")
    if losses:
        sentence += f", and significantly lowers it at eps {', '.join(losses)}"
    return sentence + "."


def paper_section(results: Results, config: dict[str, Any], out_dir: Path) -> str:
    """Tables 2, 3 and 5: the paper protocol."""
    methods = _methods(results)
    flags = config["flags"]
    rows = [["No Attack", "-"] + [_format(_collect(results, protocol="clean", method=m)) for m in methods]]
    for attack in PAPER_ATTACKS:
        for norm in ("inf", "2", "0"):
            for value in _values(results, "paper", attack, norm):
                if attack == "pgd" and norm == "inf" and value not in flags["pgd_eps"] or attack == "pgd" and norm == "2":
                    continue  # sweep points: the sweep section shows them
                rows.append([NAMES[attack], f"{value:g}"] + [_format(_collect(results, protocol="paper", attack=attack, norm=norm, value=value, method=m)) for m in methods])
    if len(rows) == 1:
        return ""
    settings = next(r["settings"] for r in results.values() if r["protocol"] == "paper")
    return "\n".join([
        "## White-box attacks, paper protocol (Tables 2, 3, 5)",
        "",
        "As the authors' code runs them: averaged probabilities, loss NLL(log p), the model's own predictions as "
        f"labels; FGSM, BIM and PGD under L_inf with Para. = eps; BIM and PGD {settings['steps']} iterations "
        f"of eps/10, PGD with one random start; JSMA with theta {settings['jsma_theta']}, Para. = gamma; C&W L2 "
        f"with Para. = initial c, {settings['cw_steps']} steps x {settings['cw_search_steps']} binary-search "
        f"steps, learning rate {settings['cw_lr']}, confidence {settings['cw_confidence']}, margin on the averaged probabilities. "
        + _over_seeds(results, ("clean", "paper")),
        "",
        _table(["Attacks", "Para."] + methods, rows),
    ])


def strong_section(results: Results, config: dict[str, Any], out_dir: Path) -> str:
    """Paper protocol beside the strong one at the same L_inf epsilons, with the rows the strong one erases flagged."""
    methods = _methods(results)
    flags = config["flags"]
    epsilons = _strong_epsilons(results, flags)
    if not epsilons:
        return ""
    rows, flag_rows = [], []
    for eps in epsilons:
        for attack in ("fgsm", "bim", "pgd"):
            if _collect(results, protocol="paper", attack=attack, norm="inf", value=eps):
                rows.append([f"{NAMES[attack]} (paper)", f"{eps:g}"] + [_format(_collect(results, protocol="paper", attack=attack, norm="inf", value=eps, method=m)) for m in methods])
        for attack in _strong_attacks(results):
            if _collect(results, protocol="strong", attack=attack, norm="inf", value=eps):
                rows.append([f"{_name(attack, flags)} (strong)", f"{eps:g}"] + [_format(_collect(results, protocol="strong", attack=attack, norm="inf", value=eps, method=m)) for m in methods])
        worst = {m: _worst_case(results, eps, m) for m in methods}
        rows.append(["**strong, worst case**", f"{eps:g}"] + [_format(worst[m]) for m in methods])
        flag_rows += _flag_rows(results, eps, methods, worst)
    steps, restarts = flags["strong_steps"], flags["strong_restarts"]
    described = {
        "pgd-strong": f"PGD with {steps} steps of 2.5 eps/steps and {restarts} random start(s) on the averaged logits (cross-entropy)",
        "pgd-probs": "the same PGD on the log of the averaged probabilities (what the ensemble decides on)",
        "mora": f"a MORA-style attack on the members with per-member reweighting, 5 mixing scales x {steps} steps",
        "apgd-ce": (
            f"the library's APGD (ensemble_diversity.attacks, not ART's) with {steps} steps and {restarts} random start(s) "
            "on the cross-entropy of the averaged logits"
        ),
        "apgd-dlr": f"the library's APGD with {steps} steps and {restarts} random start(s) on the DLR loss of the averaged logits",
        "autoattack": (
            f"AutoAttack (APGD-CE, then APGD-T with the DLR loss at the {flags['autoattack_targets']} classes with the "
            f"next-highest clean logits, then Square with {flags['square_queries']} queries; no FAB-T, which ART lacks) on the log of the "
            "averaged probabilities (the ensemble's logits: every stage judges an image by the ensemble's decision)"
        ),
    }
    present = [attack for attack in _strong_attacks(results) if attack in described]
    parts = [
        "## Paper protocol beside the strong protocol",
        "",
        "Strong protocol, with the true labels under L_inf, in this order: " + "; ".join(described[attack] for attack in present) + ". "
        "Each attack runs only on the images every attack above it failed on (as AutoAttack runs its own), so each "
        "strong row is the worst case so far: an image counts when it survived that attack and every one above it. "
        "\"worst case\" counts an image as robust only when it survives every strong attack, per seed (see docs/evaluation.md). "
        + _over_seeds(results, ("paper", "strong")),
        "",
        _table(["Attacks", "eps"] + methods, rows),
    ]
    if flag_rows:
        parts += [
            "",
            "Gain over the baseline (mean accuracy points over all images), paper protocol -> strong worst case. "
            "**FLAG** marks a row where the strong protocol erases more than half of the gain.",
            "",
            _table(["Paper attack", "eps"] + [m for m in methods if m != "baseline"], flag_rows),
        ]
    return "\n".join(parts)


def _flag_rows(results: Results, eps: float, methods: list[str], worst: dict[str, Cell]) -> list[list[str]]:
    strong_base = _mean(worst.get("baseline", {}))
    if strong_base is None:
        return []
    rows = []
    for attack in ("fgsm", "bim", "pgd"):
        paper_base = _mean(_collect(results, protocol="paper", attack=attack, norm="inf", value=eps, method="baseline"))
        if paper_base is None:
            continue
        cells = []
        for method in methods:
            if method == "baseline":
                continue
            paper, strong = _mean(_collect(results, protocol="paper", attack=attack, norm="inf", value=eps, method=method)), _mean(worst[method])
            if paper is None or strong is None:
                cells.append("-")
                continue
            paper_gain, strong_gain = 100 * (paper - paper_base), 100 * (strong - strong_base)
            flagged = paper_gain > 0 and strong_gain < paper_gain / 2
            cells.append(f"{_points(paper_gain)} -> {_points(strong_gain)}" + (" **FLAG**" if flagged else ""))
        rows.append([NAMES[attack], f"{eps:g}"] + cells)
    return rows


def transfer_section(results: Results, config: dict[str, Any], out_dir: Path) -> str:
    """Table 4: black-box transfer from surrogates."""
    methods = _methods(results)
    rows = []
    for protocol, kind in (("transfer-I", "Type I"), ("transfer-II", "Type II")):
        for attack in TRANSFER_ATTACKS:
            for value in _values(results, protocol, attack):
                rows.append([kind, NAMES[attack], f"{value:g}"] + [_format(_collect(results, protocol=protocol, attack=attack, value=value, method=m)) for m in methods])
    if not rows:
        return ""
    surrogates = sorted({r["surrogate"] for r in results.values() if r["protocol"].startswith("transfer")})
    return "\n".join([
        "## Black-box transfer attacks (Table 4)",
        "",
        "Adversarial examples crafted on a surrogate with the paper protocol (averaged probabilities, the "
        "surrogate's own predictions as labels), accuracy measured on the target. Type I: the surrogate run's "
        "baseline ensemble; Type II: its ensemble trained with the target's method. Surrogates: "
        + ", ".join(f"`{s}`" for s in surrogates) + ". " + _over_seeds(results, ("transfer-I", "transfer-II")),
        "",
        _table(["Black-Box", "Attacks", "Para."] + methods, rows),
    ])


def sweep_section(results: Results, config: dict[str, Any], out_dir: Path) -> str:
    """Fig. 4: accuracy against increasing epsilon, L_inf and L_2, with each method's robustness limit."""
    methods = _methods(results)
    flags = config["flags"]
    curves: dict[tuple[str, str], list[float]] = {}
    for protocol, attack in (("paper", "pgd"), ("strong", "pgd-strong")):
        for norm, key in (("inf", "sweep_linf"), ("2", "sweep_l2")):
            sweep = [value for value in flags[key] if _collect(results, protocol=protocol, attack=attack, norm=norm, value=value)]
            if len(sweep) > 1:
                curves[(attack, norm)] = sweep
    if not curves:
        return ""
    cells = {
        (attack, norm): {m: [_collect(results, protocol="paper" if attack == "pgd" else "strong", attack=attack, norm=norm, value=v, method=m) for v in sweep] for m in methods}
        for (attack, norm), sweep in curves.items()
    }
    _sweep_figure(methods, curves, cells, flags, out_dir / "sweep.png")
    grids = "; ".join(sorted({f"{NORMS[norm]} " + ", ".join(f"{v:g}" for v in sweep) for (_, norm), sweep in curves.items()}))
    rows, limits = [], []
    for (attack, norm), sweep in curves.items():
        found = cells[(attack, norm)]
        for index, value in enumerate(sweep):
            rows.append([f"{_name(attack, flags)} {NORMS[norm]}", f"{value:g}"] + [_format(found[m][index]) for m in methods])
        limits.append([f"{_name(attack, flags)} {NORMS[norm]}", "limit"] + [_limit(sweep, found[m]) for m in methods])
    return "\n".join([
        "## Increasing attack strength (Fig. 4)",
        "",
        f"PGD over increasing epsilons ({grids}; paper protocol: 10 steps of eps/10, one random start, averaged "
        f"probabilities; strong: {flags['strong_steps']} steps, {flags['strong_restarts']} restart(s), averaged logits). The robustness "
        "limit is the first epsilon at which the mean accuracy over all images reaches zero (\"> last\" when none does); "
        "the figure's error bars are the std over the training seeds. " + _over_seeds(results, ("paper", "strong")),
        "",
        "![sweep](sweep.png)",
        "",
        _table(["Attack", "eps"] + methods, rows + limits),
    ])


def _limit(sweep: list[float], found: list[Cell]) -> str:
    for value, cell in zip(sweep, found):
        if cell and _mean(cell) == 0:
            return f"{value:g}"
    return f"> {sweep[-1]:g}"


def _sweep_figure(
    methods: list[str], curves: dict[tuple[str, str], list[float]], cells: dict[tuple[str, str], dict[str, list[Cell]]], flags: dict[str, Any], path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # One panel per (attack, norm), one colour per method: with a dozen methods, two line
    # styles in one panel and a legend entry per line would not be readable.
    panels = list(curves)
    columns = min(2, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 3.8 * rows + 0.6), squeeze=False)
    colours = plt.get_cmap("tab20")
    for axis, (attack, norm) in zip(axes.flat, panels):
        for index, method in enumerate(methods):
            points = [(v, [100 * r["accuracy"] for r in cell.values()]) for v, cell in zip(curves[(attack, norm)], cells[(attack, norm)][method]) if cell]
            if points:
                xs = [v for v, _ in points]
                means = [np.mean(accuracies) for _, accuracies in points]
                # A point of one seed has no spread: no bars rather than a std of 0 that would read as certainty.
                errors = [np.std(accuracies, ddof=1) for _, accuracies in points] if all(len(a) > 1 for _, a in points) else None
                axis.errorbar(xs, means, yerr=errors, capsize=3, marker="o", markersize=3, color=colours(index % 20), label=method)
        axis.set_title(f"{_name(attack, flags)} ({'paper' if attack == 'pgd' else 'strong'} protocol), {NORMS[norm]}", fontsize=9)
        axis.set_xscale("log", base=2)
        axis.set_xlabel(f"epsilon ({NORMS[norm]}, log2 scale)")
        axis.set_ylabel("accuracy over all images (%)")
        axis.set_ylim(-2, 102)
        axis.grid(True, alpha=0.3)
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=7, frameon=False)
    figure.tight_layout(rect=(0, 0.04 + 0.02 * (-(-len(labels) // 4)), 1, 1))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    save_bytes(path, buffer.getvalue())


def diversity_report_section(results: Results, config: dict[str, Any], out_dir: Path) -> str:
    """Table 1 and Figs. 1-3, as ``diversity_analysis.diversity_section`` wrote them (links relative to ``out_dir``)."""
    path = out_dir / DIVERSITY_DIR / DIVERSITY_MARKDOWN
    return path.read_text().strip() if path.exists() else ""


def cost_section(results: Results, config: dict[str, Any], out_dir: Path) -> str:
    """Wall time of each attack, summed over its results (every seed), so that a budget can be planned from a run."""
    totals: dict[tuple[str, str], list[float]] = {}
    for result in results.values():
        if result["protocol"] != "clean" and "seconds" in result:
            entry = totals.setdefault((result["protocol"], result["attack"]), [0, 0.0])
            entry[0] += 1
            entry[1] += result["seconds"]
    if not totals:
        return ""
    rows = [[protocol, _name(attack, config["flags"]), f"{count:g}", f"{seconds:.0f}"] for (protocol, attack), (count, seconds) in totals.items()]
    rows.append(["**all**", "", f"{sum(c for c, _ in totals.values()):g}", f"{sum(s for _, s in totals.values()):.0f}"])
    return "\n".join([
        "## Time spent",
        "",
        "Seconds of wall time per attack, summed over its results (every target, training seed, parameter and norm; "
        "the sweeps are counted under their attack), as measured while crafting and scoring; loading and the diversity "
        "analysis are not included.",
        "",
        _table(["Protocol", "Attack", "Results", "Seconds"], rows),
    ])


REPORT_SECTIONS: list[Section] = [
    provenance_section,
    headline_section,
    peers_section,
    advt_section,
    paper_section,
    strong_section,
    transfer_section,
    sweep_section,
    diversity_report_section,
    cost_section,
]
"""The report's sections, in order; append a section function to extend it."""
