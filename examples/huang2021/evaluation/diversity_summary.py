"""The paper's diversity analysis (Table 1, Figs. 1-3) over the seeds of a merged evaluation.

An evaluation with ``--attacks diversity`` of every method of one training seed writes the
analysis to its ``diversity/`` (:mod:`.diversity_analysis`). A merge of several seeds' parts
gets, from every part that holds one, Table 1's numbers per method as mean ± std over the seeds,
and each seed's figures copied beside the report (``diversity-seed-<N>/``) and linked.
Unlike the training runs' table (:mod:`.training_summary`), every number of a seed is measured
on the images that *all* methods of that seed's analysis classify correctly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..run_dir import load_json, save_bytes
from .diversity_analysis import DATA_JSON, FIG1, FIG2, FIG3
from .report import DIVERSITY_DIR
from .results import ResultStore
from .training_summary import mean_std

ROWS = (
    ("test accuracy %", ("test_accuracy",), 100.0, 1),
    ("E, eq. 5 (Table 1)", ("ambiguity_entropy",), 1.0, 3),
    ("L_F, eq. 6: mean (Fig. 2)", ("discrimination_score", "mean"), 1.0, 3),
    ("L_F, eq. 6: median (Fig. 2)", ("discrimination_score", "median"), 1.0, 3),
    ("gradient angle, degrees: mean (Fig. 3)", ("gradient_angle_degrees", "mean"), 1.0, 1),
    ("gradient angle, degrees: median (Fig. 3)", ("gradient_angle_degrees", "median"), 1.0, 1),
    ("Grad-CAM centre distance, px: median over images (Fig. 1)", ("gradcam_centre_distance", "over_images", "median"), 1.0, 2),
)
"""(row label, path into a method's entry of ``diversity.json``, scale, decimals)."""
FIGURES = ((FIG1, "Fig. 1 Grad-CAM"), (FIG2, "Fig. 2 L_F"), (FIG3, "Fig. 3 angles"))


def seed_dir(seed: int) -> str:
    """Where a merge puts the figures of training seed ``seed``'s analysis, under its out dir."""
    return f"diversity-seed-{seed}"


def diversity_summary_section(parts: list[Path], out_dir: Path) -> str:
    """Table 1 and Figs. 1-3 over every part holding ``diversity/diversity.json`` ("" if none does).

    A cell is one seed's value or ``mean ± std`` (ddof 1) over the seeds that analysed the method;
    each seed's figures are copied to ``out_dir / seed_dir(seed)``. Raises ValueError naming the
    parts when two of them analysed the same seed, or one analysed targets of several seeds.
    """
    analyses: dict[int, dict[str, Any]] = {}
    where: dict[int, Path] = {}
    for part in parts:
        if not (part / DIVERSITY_DIR / DATA_JSON).exists():
            continue
        seeds = sorted({int(result["train_seed"]) for result in ResultStore(part).results.values()})
        if len(seeds) != 1:
            raise ValueError(f"Expected the diversity analysis of {str(part)!r} to be of one training seed, but its results have seeds {seeds}")
        seed = seeds[0]
        if seed in where:
            raise ValueError(f"Expected one diversity analysis per training seed, but seed {seed} is in both {str(where[seed])!r} and {str(part)!r}")
        where[seed] = part
        analyses[seed] = load_json(part / DIVERSITY_DIR / DATA_JSON)
        (out_dir / seed_dir(seed)).mkdir(parents=True, exist_ok=True)
        for figure, _ in FIGURES:
            save_bytes(out_dir / seed_dir(seed) / figure, (part / DIVERSITY_DIR / figure).read_bytes())
    if not analyses:
        return ""
    methods = list(dict.fromkeys(method for analysis in analyses.values() for method in analysis["methods"]))
    header = ["", *methods]
    rows = [["seeds", *(", ".join(str(s) for s in sorted(analyses) if method in analyses[s]["methods"]) for method in methods)]]
    for label, path, scale, decimals in ROWS:
        cells = [mean_std([_value(analyses[s]["methods"][method], path) * scale for s in sorted(analyses) if method in analyses[s]["methods"]], decimals) for method in methods]
        rows.append([label, *cells])
    shared = ", ".join(f"{analyses[s]['images_correct_for_all_methods']} of {analyses[s]['test_images']} (seed {s})" for s in sorted(analyses))
    links = [f"seed {s}: " + ", ".join(f"[{name}]({seed_dir(s)}/{figure})" for figure, name in FIGURES) for s in sorted(analyses)]
    first = min(analyses)
    return "\n".join([
        "## Diversity analysis (Table 1, Figs. 1-3)",
        "",
        "Each seed's analysis (`examples/evaluate.py --attacks diversity` on all of that seed's runs) measured every method "
        "on the same images: test accuracy and E over all test images of the seed's split; L_F, the gradient angles and the "
        f"Grad-CAM distances over the images every method classifies correctly ({shared}). Per-image statistics (mean, "
        "median) are taken within a seed, then a cell is one seed's value or mean ± std (ddof 1) over the seeds.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        "Each seed's figures: " + "; ".join(links) + ".",
        "",
        f"![Fig. 2, seed {first}: discrimination score L_F]({seed_dir(first)}/{FIG2})",
        f"![Fig. 3, seed {first}: angles between the members' input gradients]({seed_dir(first)}/{FIG3})",
    ])


def _value(entry: dict[str, Any], path: tuple[str, ...]) -> float:
    for key in path:
        entry = entry[key]
    return float(entry)  # type: ignore[arg-type]
