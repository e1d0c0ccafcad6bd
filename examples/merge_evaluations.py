"""Merge evaluation directories of examples/evaluate.py that ran the same settings on different runs, and write the report over all.

    PYTHONPATH=src:examples python examples/merge_evaluations.py --out-dir runs/digits-eval runs/digits-eval-s0 runs/digits-eval-s1

Evaluating seeds one directory each lets them run side by side (one process per core, or one
machine each); the merge refuses parts whose results-defining flags differ (attack settings,
data set, limit, attack seed) and a result that two parts hold with different contents.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

MISSING: str | None
try:
    from huang2021.evaluation.merge import merge_evaluations
except ModuleNotFoundError as error:  # --help still answers without the evaluation extra
    MISSING = error.name
else:
    MISSING = None


def main(argv: list[str] | None = None) -> Path:
    """Run the command; returns the merged report's path."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("eval_dirs", nargs="+", type=Path, metavar="EVAL_DIR", help="evaluation directories (examples/evaluate.py --out-dir)")
    parser.add_argument("--out-dir", type=Path, required=True, help="the merged evaluation: a new directory, or an earlier merge to rewrite")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if MISSING is not None:
        parser.error(f"merging needs the evaluation extra, which is not installed (no module {MISSING!r}): pip install -e '.[evaluation]'")
    try:
        report = merge_evaluations(args.out_dir, args.eval_dirs)
    except ValueError as error:
        parser.error(str(error))
    print(f"report: {report}")
    return report


if __name__ == "__main__":
    main()
