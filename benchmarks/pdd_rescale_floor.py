"""The main command, ``examples/train.py``, with PDD's ``rescale_floor`` set: the floor's effect on digits.

    PYTHONPATH=src:examples python benchmarks/pdd_rescale_floor.py --rescale-floor 0.1 -- --methods pdd,pdd+deg --seed 0 --run-dir runs/floor

    PYTHONPATH=src:examples python benchmarks/pdd_rescale_floor.py --compare runs/floor-off-seed0 runs/floor-off-seed1 runs/floor-off-seed2 --against runs/floor-0.1-seed0 runs/floor-0.1-seed1 runs/floor-0.1-seed2 --out benchmarks/results/pdd_rescale_floor.json

Every argument after ``--`` goes to ``train.py`` unchanged; the PDD it builds for the PDD methods
gets ``rescale_floor`` (``train.py`` has no flag for it). ``--rescale-floor 0`` is ``train.py``
itself. Give ``train.py`` a ``--run-dir``: the floor is written to ``rescale_floor.json`` there,
beside the run's own files. ``--compare A... --against B...`` reads any two sets of runs' ``results.json`` (seed i
of A paired with seed i of B; the PDD weight sweep in README.md uses it too) and prints, per method, the means and sample standard deviations over seeds of
clean and PGD-50 accuracy and of the gradient angle, and the mean paired difference B - A with
each seed's. ``docs/method.md`` ("How much PDD's rescaling amplifies") reports the comparison.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
from pathlib import Path
from typing import Any

import huang2021.training.loop as loop
import train  # examples/train.py, found through PYTHONPATH=...:examples

from ensemble_diversity import PriorityDiversifiedDropout


def compare(baseline: list[Path], other: list[Path]) -> dict[str, Any]:
    """Per method and column: mean and sd over seeds of each side, and the paired differences other - baseline (points)."""
    runs = [[json.loads((run / "results.json").read_text())["methods"] for run in side] for side in (baseline, other)]
    table: dict[str, Any] = {}
    for method in [name for name in runs[0][0] if name in runs[1][0]]:  # the methods both sides trained
        # Accuracies in %; the gradient angle (Fig. 3) in degrees, over the test images every
        # method of that run classifies correctly.
        columns = {"test_accuracy": lambda r: 100 * r["test_accuracy"]}
        for eps in runs[0][0][method].get("robust_accuracy", {}):
            columns[f"pgd50_eps{eps}"] = lambda r, eps=eps: 100 * r["robust_accuracy"][eps]
        columns["angle_degrees"] = lambda r: r["gradient_angle_degrees"]
        table[method] = {}
        for column, read in columns.items():
            a = [read(seed[method]) for seed in runs[0]]
            b = [read(seed[method]) for seed in runs[1]]
            differences = [y - x for x, y in zip(a, b)]
            table[method][column] = {
                "baseline": a,
                "other": b,
                "baseline_mean_sd": [statistics.mean(a), _sd(a)],
                "other_mean_sd": [statistics.mean(b), _sd(b)],
                "paired_differences": differences,
                "mean_difference": statistics.mean(differences),
            }
            print(
                f"{method:8} {column:16} {statistics.mean(a):6.2f} +- {_sd(a) or 0:4.2f}  ->  "
                f"{statistics.mean(b):6.2f} +- {_sd(b) or 0:4.2f}   paired {statistics.mean(differences):+5.2f} "
                f"(per seed {', '.join(f'{d:+.2f}' for d in differences)})"
            )
    return {"baseline": [str(run) for run in baseline], "other": [str(run) for run in other], "methods": table}


def _sd(values: list[float]) -> float | None:
    """Sample standard deviation; None for a single seed."""
    return statistics.stdev(values) if len(values) > 1 else None


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rescale-floor", type=float, default=None, help="PDD's rescale_floor, in [0, 1]")
    parser.add_argument("--compare", type=Path, nargs="+", default=None, help="run directories without the floor, one per seed")
    parser.add_argument("--against", type=Path, nargs="+", default=None, help="the same seeds' run directories with it")
    parser.add_argument("--out", type=Path, default=None, help="with --compare: JSON file for the comparison")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="train.py's arguments, after --")
    args = parser.parse_args(argv)
    if args.compare is not None:
        if args.against is None or len(args.against) != len(args.compare):
            parser.error("--compare and --against take one run directory per seed each, in the same order")
        result = compare(args.compare, args.against)
        if args.out is not None:
            args.out.write_text(json.dumps(result, indent=1) + "\n")
        return result
    if args.rescale_floor is None:
        parser.error("give --rescale-floor F -- <train.py arguments>, or --compare ... --against ...")
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    if "--run-dir" not in train_args[:-1]:
        parser.error("give train.py a --run-dir (after --): the floor is recorded there")
    run_dir = Path(train_args[train_args.index("--run-dir") + 1])
    # The harness builds its PDD from this name (huang2021/training/loop.py: _fresh_state).
    loop.PriorityDiversifiedDropout = functools.partial(PriorityDiversifiedDropout, rescale_floor=args.rescale_floor)  # type: ignore[misc]
    result = train.main(train_args)
    if result is not None:  # None on ranks other than 0 under torchrun
        (run_dir / "rescale_floor.json").write_text(json.dumps({"rescale_floor": args.rescale_floor}) + "\n")
    return result


if __name__ == "__main__":
    main()
