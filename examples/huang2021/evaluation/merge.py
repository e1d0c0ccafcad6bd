"""One evaluation from several: the results of evaluation directories that ran the same settings on
different runs (seeds evaluated in parallel, on one machine or several), and the report over all.

A result's key names its method and training seed (:func:`.results.result_key`), so results of
different directories never mean different things once their results-defining flags agree
(every stored flag but the run directories, the output directory and ``NEUTRAL_FLAGS``, which
choose what to compute, not what a result means). The merged ``config.json`` keeps each part's
command, sessions and versions, and the report's provenance lists them. Parts that carry their
training runs' own measurements get them in the report too (:mod:`.training_summary`), and parts
holding one seed's diversity analysis give the report its Table 1 over the seeds (:mod:`.diversity_summary`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..run_dir import CONFIG, create_run_dir, load_json, save_json, save_text
from .diversity_summary import diversity_summary_section
from .report import write_report
from .results import RESULTS_JSON, ResultStore
from .robustness import NEUTRAL_FLAGS
from .training_summary import training_section

PER_PART_FLAGS = ("run_dirs", "out_dir", *NEUTRAL_FLAGS)
"""Flags that may differ between the parts (the merged config holds their union or the first's)."""


def merge_evaluations(out_dir: Path, parts: list[Path]) -> Path:
    """Write ``out_dir`` (new or empty, or an earlier merge) with every part's results and the report over all; returns the report's path.

    Raises ValueError naming ``EVAL_DIR`` for a part that is no evaluation, parts whose
    results-defining flags differ, or one result key with different contents in two parts, and
    naming ``--out-dir`` for an ``out_dir`` holding anything but an earlier merge.
    """
    if len(parts) < 2:
        raise ValueError(f"Expected at least two EVAL_DIRs to merge, but got {len(parts)}")
    configs = [_evaluation_config(part) for part in parts]
    first = configs[0]["flags"]
    for part, config in zip(parts[1:], configs[1:], strict=True):
        differing = sorted(key for key in first.keys() | config["flags"].keys() if key not in PER_PART_FLAGS and first.get(key) != config["flags"].get(key))
        if differing:
            detail = "; ".join(f"{key} is {first.get(key)!r} in {str(parts[0])!r}, {config['flags'].get(key)!r} there" for key in differing)
            raise ValueError(f"Expected every EVAL_DIR to share the results-defining flags, but {str(part)!r} differs: {detail}")
    results: dict[str, dict[str, Any]] = {}
    for part in parts:
        for key, result in ResultStore(part).results.items():
            if key in results and results[key] != result:
                raise ValueError(f"Expected a result in two EVAL_DIRs to be the same, but {key!r} differs in {str(part)!r}")
            results[key] = result
    _open_merge_dir(out_dir)
    run_dirs = list(dict.fromkeys(run_dir for config in configs for run_dir in config["flags"]["run_dirs"]))
    merged = {
        "flags": {**first, "run_dirs": run_dirs, "out_dir": str(out_dir)},
        "argv": configs[0]["argv"],
        "versions": configs[0]["versions"],
        "sessions": [],
        "merged_from": [
            {"eval_dir": str(part), "argv": config["argv"], "sessions": config["sessions"], "versions": config["versions"]}
            for part, config in zip(parts, configs, strict=True)
        ],
    }
    save_json(out_dir / CONFIG, merged)
    store = ResultStore(out_dir)
    store.results = results
    store.save()
    report = write_report(out_dir, results, merged)
    for section in (training_section(parts), diversity_summary_section(parts, out_dir)):
        if section:
            save_text(report, report.read_text() + "\n" + section + "\n")
    return report


def _evaluation_config(part: Path) -> dict[str, Any]:
    if not (part / CONFIG).exists() or not (part / RESULTS_JSON).exists():
        raise ValueError(f"Expected EVAL_DIR to be an evaluation directory of examples/evaluate.py, but {str(part)!r} has no {CONFIG} and {RESULTS_JSON}")
    config = load_json(part / CONFIG)
    if "merged_from" in config:
        raise ValueError(f"Expected EVAL_DIR to be an evaluation of examples/evaluate.py, but {str(part)!r} is itself a merge; merge its parts instead")
    return config


def _open_merge_dir(out_dir: Path) -> None:
    if (out_dir / CONFIG).exists() and "merged_from" in load_json(out_dir / CONFIG):
        return
    try:
        create_run_dir(out_dir)
    except ValueError:
        raise ValueError(f"Expected --out-dir to be a new or empty directory or an earlier merge, but {str(out_dir)!r} holds other files") from None
