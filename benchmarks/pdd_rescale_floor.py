"""The main command, ``examples/train.py``, with PDD's ``rescale_floor`` set: the floor's effect on digits.

    PYTHONPATH=src:examples python benchmarks/pdd_rescale_floor.py --rescale-floor 0.1 -- --methods pdd,pdd+deg --seed 0 --run-dir runs/floor

Every argument after ``--`` goes to ``train.py`` unchanged; the PDD it builds for the PDD methods
gets ``rescale_floor`` (``train.py`` has no flag for it). ``--rescale-floor 0`` is ``train.py``
itself. Give ``train.py`` a ``--run-dir``: the floor is written to ``rescale_floor.json`` there,
beside the run's own files. ``docs/method.md`` ("How much PDD's rescaling amplifies") reports the comparison.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path
from typing import Any

import huang2021.training.loop as loop
import train  # examples/train.py, found through PYTHONPATH=...:examples

from ensemble_diversity import PriorityDiversifiedDropout


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rescale-floor", type=float, required=True, help="PDD's rescale_floor, in [0, 1]")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="train.py's arguments, after --")
    args = parser.parse_args(argv)
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
