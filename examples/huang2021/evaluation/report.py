"""The evaluation report: Markdown tables laid out like the paper's (methods as columns, attacks
and parameters as rows) and PNG figures, generated from the results alone (no attack is run).

``REPORT_SECTIONS`` is the report, in order: each section is a function of the results, the
evaluation's config and its directory (where it may save figures), returning Markdown, or ""
when it has nothing to show. Further analyses plug in by appending their section function,
e.g. the diversity analysis (Table 1, Figs. 1-3) as ``diversity_section``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..run_dir import save_bytes, save_text
from .attacks import PAPER_ATTACKS, STRONG_ATTACKS, TRANSFER_ATTACKS
from .diversity_analysis import MARKDOWN as DIVERSITY_MARKDOWN

REPORT = "report.md"
DIVERSITY_DIR = "diversity"
"""Where ``evaluate.py`` writes the diversity analysis (``--attacks diversity``), under its out dir."""
Results = dict[str, dict[str, Any]]
Section = Callable[[Results, dict[str, Any], Path], str]

NAMES = {"fgsm": "FGSM", "bim": "BIM", "pgd": "PGD", "jsma": "JSMA", "cw": "C&W", "pgd-strong": "PGD-100x5", "autoattack": "AutoAttack"}
NORMS = {"inf": "L_inf", "2": "L_2", "0": "L_0"}


def write_report(out_dir: Path, results: Results, config: dict[str, Any]) -> Path:
    """Write ``report.md`` (and its figures) into ``out_dir`` from ``results`` (as in results.json)."""
    sections = [section(results, config, out_dir) for section in REPORT_SECTIONS]
    path = out_dir / REPORT
    save_text(path, "\n\n".join(section for section in sections if section) + "\n")
    return path


def _methods(results: Results) -> list[str]:
    """Method labels in the order first evaluated (clean results come first)."""
    return list(dict.fromkeys(result["method"] for result in results.values()))


def _find(results: Results, **fields: Any) -> dict[str, Any] | None:
    for result in results.values():
        if all(result.get(key) == value for key, value in fields.items()):
            return result
    return None


def _cell(result: dict[str, Any] | None) -> str:
    """``accuracy (conditional)`` in %, the headline first."""
    if result is None:
        return "-"
    return f"{100 * result['accuracy']:.1f} ({100 * result['conditional_accuracy']:.1f})"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _values(results: Results, protocol: str, attack: str, norm: str | None = None) -> list[float]:
    return sorted({r["value"] for r in results.values() if r["protocol"] == protocol and r["attack"] == attack and (norm is None or r["norm"] == norm)})


def provenance_section(results: Results, config: dict[str, Any], out_dir: Path) -> str:
    flags = config["flags"]
    lines = [
        "# Robustness evaluation",
        "",
        f"Command: `python examples/evaluate.py {' '.join(config['argv'])}`" + (f" (resumed {len(config['sessions'])} times)" if config["sessions"] else ""),
        f"Targets: {', '.join(f'`{d}`' for d in flags['run_dirs'])}; data set `{flags['dataset']}`; "
        f"{flags['limit'] if flags['limit'] else 'all'} test images; attack seed {flags['seed']}.",
        "Versions: " + ", ".join(f"{name} {version}" for name, version in config["versions"].items()) + ".",
        "",
        "Every cell is robust accuracy in % over **all** evaluated test images (an image counts when it is "
        "classified correctly before and after the attack), and in parentheses over only the images classified "
        "correctly before it, the figure the authors' code reports. The attacked model is the whole ensemble; "
        "its output is the members' **averaged probabilities** (the paper's ensemble and the authors' code) in the "
        "paper protocol and in transfer attacks, the members' **averaged logits** in the strong protocol; accuracy "
        "is always that of the averaged probabilities.",
    ]
    return "\n".join(lines)


def paper_section(results: Results, config: dict[str, Any], out_dir: Path) -> str:
    """Tables 2, 3 and 5: the paper protocol."""
    methods = _methods(results)
    flags = config["flags"]
    rows = [["No Attack", "-"] + [_cell(_find(results, protocol="clean", method=m)) for m in methods]]
    for attack in PAPER_ATTACKS:
        for norm in ("inf", "2", "0"):
            for value in _values(results, "paper", attack, norm):
                if attack == "pgd" and norm == "inf" and value not in flags["pgd_eps"] or attack == "pgd" and norm == "2":
                    continue  # sweep points: the sweep section shows them
                rows.append([NAMES[attack], f"{value:g}"] + [_cell(_find(results, protocol="paper", attack=attack, norm=norm, value=value, method=m)) for m in methods])
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
        f"steps, learning rate {settings['cw_lr']}, confidence {settings['cw_confidence']}, margin on the averaged probabilities.",
        "",
        _table(["Attacks", "Para."] + methods, rows),
    ])


def strong_section(results: Results, config: dict[str, Any], out_dir: Path) -> str:
    """Paper protocol beside the strong one at the same L_inf epsilons, with the rows the strong one erases flagged."""
    methods = _methods(results)
    flags = config["flags"]
    # The strong protocol's epsilons are the paper protocol's; the strong sweep adds PGD-100x5
    # results at others, which belong to the sweep's table, not beside AutoAttack's.
    protocol_epsilons = {value for key in ("fgsm_eps", "bim_eps", "pgd_eps") for value in flags[key]}
    found = set(_values(results, "strong", "pgd-strong", "inf")) | set(_values(results, "strong", "autoattack", "inf"))
    epsilons = sorted(eps for eps in found if eps in protocol_epsilons or not protocol_epsilons)
    if not epsilons:
        return ""
    rows, flag_rows = [], []
    for eps in epsilons:
        for attack in ("fgsm", "bim", "pgd"):
            if _find(results, protocol="paper", attack=attack, norm="inf", value=eps):
                rows.append([f"{NAMES[attack]} (paper)", f"{eps:g}"] + [_cell(_find(results, protocol="paper", attack=attack, norm="inf", value=eps, method=m)) for m in methods])
        for attack in STRONG_ATTACKS:
            rows.append([f"{NAMES[attack]} (strong)", f"{eps:g}"] + [_cell(_find(results, protocol="strong", attack=attack, norm="inf", value=eps, method=m)) for m in methods])
        worst = {m: _worst_case(results, eps, m) for m in methods}
        rows.append(["**strong, worst case**", f"{eps:g}"] + [_percent(worst[m]) for m in methods])
        flag_rows += _flag_rows(results, eps, methods, worst)
    parts = [
        "## Paper protocol beside the strong protocol",
        "",
        f"Strong protocol: PGD with {flags['strong_steps']} steps of 2.5 eps/steps and "
        f"{flags['strong_restarts']} random restarts, and AutoAttack (APGD-CE, then APGD-T with the DLR loss "
        f"at the {flags['autoattack_targets']} classes with the next-highest clean logits, then Square with "
        f"{flags['square_queries']} queries; no FAB-T, which ART lacks; see docs/evaluation.md), both on "
        "the averaged logits with the true labels, under L_inf. \"worst case\" counts an image as robust only "
        "when it survives both strong attacks.",
        "",
        _table(["Attacks", "eps"] + methods, rows),
    ]
    if flag_rows:
        parts += [
            "",
            "Gain over the baseline (accuracy points over all images), paper protocol -> strong worst case. "
            "**FLAG** marks a row where the strong protocol erases more than half of the gain.",
            "",
            _table(["Paper attack", "eps"] + [m for m in methods if m != "baseline"], flag_rows),
        ]
    return "\n".join(parts)


def _worst_case(results: Results, eps: float, method: str) -> float | None:
    """Accuracy over all images counting an image only when it survives every strong attack at ``eps``."""
    masks = [np.asarray(r["robust"], dtype=bool) for r in results.values() if r["protocol"] == "strong" and r["norm"] == "inf" and r["value"] == eps and r["method"] == method]
    if not masks:
        return None
    return float(np.logical_and.reduce(masks).mean())


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _flag_rows(results: Results, eps: float, methods: list[str], worst: dict[str, float | None]) -> list[list[str]]:
    if "baseline" not in methods or worst["baseline"] is None:
        return []
    rows = []
    for attack in ("fgsm", "bim", "pgd"):
        base = _find(results, protocol="paper", attack=attack, norm="inf", value=eps, method="baseline")
        if base is None:
            continue
        cells = []
        for method in methods:
            if method == "baseline":
                continue
            paper = _find(results, protocol="paper", attack=attack, norm="inf", value=eps, method=method)
            if paper is None or worst[method] is None:
                cells.append("-")
                continue
            paper_gain = 100 * (paper["accuracy"] - base["accuracy"])
            strong_gain = 100 * (worst[method] - worst["baseline"])
            flagged = paper_gain > 0 and strong_gain < paper_gain / 2
            cells.append(f"{paper_gain:+.1f} -> {strong_gain:+.1f}" + (" **FLAG**" if flagged else ""))
        rows.append([NAMES[attack], f"{eps:g}"] + cells)
    return rows


def transfer_section(results: Results, config: dict[str, Any], out_dir: Path) -> str:
    """Table 4: black-box transfer from surrogates."""
    methods = _methods(results)
    rows = []
    for protocol, kind in (("transfer-I", "Type I"), ("transfer-II", "Type II")):
        for attack in TRANSFER_ATTACKS:
            for value in _values(results, protocol, attack):
                rows.append([kind, NAMES[attack], f"{value:g}"] + [_cell(_find(results, protocol=protocol, attack=attack, value=value, method=m)) for m in methods])
    if not rows:
        return ""
    surrogates = sorted({r["surrogate"] for r in results.values() if r["protocol"].startswith("transfer")})
    return "\n".join([
        "## Black-box transfer attacks (Table 4)",
        "",
        "Adversarial examples crafted on a surrogate with the paper protocol (averaged probabilities, the "
        "surrogate's own predictions as labels), accuracy measured on the target. Type I: the surrogate run's "
        "baseline ensemble; Type II: its ensemble trained with the target's method. Surrogates: "
        + ", ".join(f"`{s}`" for s in surrogates) + ".",
        "",
        _table(["Black-Box", "Attacks", "Para."] + methods, rows),
    ])


def sweep_section(results: Results, config: dict[str, Any], out_dir: Path) -> str:
    """Fig. 4: accuracy against doubling epsilon, L_inf and L_2, with each method's robustness limit."""
    methods = _methods(results)
    flags = config["flags"]
    curves = {}
    for protocol, attack in (("paper", "pgd"), ("strong", "pgd-strong")):
        for norm, key in (("inf", "sweep_linf"), ("2", "sweep_l2")):
            sweep = [value for value in flags[key] if _find(results, protocol=protocol, attack=attack, norm=norm, value=value)]
            if len(sweep) > 1:
                curves[(attack, norm)] = sweep
    if not curves:
        return ""
    _sweep_figure(results, methods, curves, out_dir / "sweep.png")
    rows, limits = [], []
    for (attack, norm), sweep in curves.items():
        protocol = "paper" if attack == "pgd" else "strong"
        found = {m: [_find(results, protocol=protocol, attack=attack, norm=norm, value=v, method=m) for v in sweep] for m in methods}
        for index, value in enumerate(sweep):
            rows.append([f"{NAMES[attack]} {NORMS[norm]}", f"{value:g}"] + [_cell(found[m][index]) for m in methods])
        limits.append([f"{NAMES[attack]} {NORMS[norm]}", "limit"] + [_limit(sweep, found[m]) for m in methods])
    return "\n".join([
        "## Increasing attack strength (Fig. 4)",
        "",
        "PGD with epsilon doubling (paper protocol: 10 steps of eps/10, one random start, averaged probabilities; "
        "strong: 100 steps, 5 restarts, averaged logits). The robustness limit is the first epsilon at which "
        "accuracy over all images reaches zero (\"> last\" when none does).",
        "",
        "![sweep](sweep.png)",
        "",
        _table(["Attack", "eps"] + methods, rows + limits),
    ])


def _limit(sweep: list[float], found: list[dict[str, Any] | None]) -> str:
    for value, result in zip(sweep, found):
        if result is not None and result["robust_correct"] == 0:
            return f"{value:g}"
    return f"> {sweep[-1]:g}"


def _sweep_figure(results: Results, methods: list[str], curves: dict[tuple[str, str], list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norms = [norm for norm in ("inf", "2") if any(n == norm for _, n in curves)]
    figure, axes = plt.subplots(1, len(norms), figsize=(5.5 * len(norms), 4), squeeze=False)
    colours = plt.get_cmap("tab10")
    for axis, norm in zip(axes[0], norms):
        for (attack, curve_norm), sweep in curves.items():
            if curve_norm != norm:
                continue
            protocol = "paper" if attack == "pgd" else "strong"
            for index, method in enumerate(methods):
                points = [(v, _find(results, protocol=protocol, attack=attack, norm=norm, value=v, method=method)) for v in sweep]
                points = [(v, 100 * r["accuracy"]) for v, r in points if r is not None]
                if points:
                    xs, ys = zip(*points)
                    axis.plot(xs, ys, marker="o", color=colours(index), linestyle="-" if protocol == "paper" else "--", label=f"{method} ({NAMES[attack]})")
        axis.set_xscale("log", base=2)
        axis.set_xlabel(f"epsilon ({NORMS[norm]}, log2 scale)")
        axis.set_ylabel("accuracy over all images (%)")
        axis.set_ylim(-2, 102)
        axis.grid(True, alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    save_bytes(path, buffer.getvalue())


def diversity_report_section(results: Results, config: dict[str, Any], out_dir: Path) -> str:
    """Table 1 and Figs. 1-3, as ``diversity_analysis.diversity_section`` wrote them (links relative to ``out_dir``)."""
    path = out_dir / DIVERSITY_DIR / DIVERSITY_MARKDOWN
    return path.read_text().strip() if path.exists() else ""


def cost_section(results: Results, config: dict[str, Any], out_dir: Path) -> str:
    """Wall time of each attack, summed over its results, so that a budget can be planned from a run."""
    totals: dict[tuple[str, str], list[float]] = {}
    for result in results.values():
        if result["protocol"] != "clean" and "seconds" in result:
            entry = totals.setdefault((result["protocol"], result["attack"]), [0, 0.0])
            entry[0] += 1
            entry[1] += result["seconds"]
    if not totals:
        return ""
    rows = [[protocol, NAMES[attack], f"{count:g}", f"{seconds:.0f}"] for (protocol, attack), (count, seconds) in totals.items()]
    rows.append(["**all**", "", f"{sum(c for c, _ in totals.values()):g}", f"{sum(s for _, s in totals.values()):.0f}"])
    return "\n".join([
        "## Time spent",
        "",
        "Seconds of wall time per attack, summed over its results (every target, parameter and norm; the sweeps "
        "are counted under their attack), as measured while crafting and scoring; loading and the diversity "
        "analysis are not included.",
        "",
        _table(["Protocol", "Attack", "Results", "Seconds"], rows),
    ])


REPORT_SECTIONS: list[Section] = [
    provenance_section,
    paper_section,
    strong_section,
    transfer_section,
    sweep_section,
    diversity_report_section,
    cost_section,
]
"""The report's sections, in order; append a section function to extend it."""
