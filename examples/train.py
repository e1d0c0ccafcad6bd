"""Train deep ensembles with and without PDD + DEG and compare them.

    PYTHONPATH=src python examples/train.py                      # digits, baseline vs pdd+deg, K=3
    PYTHONPATH=src python examples/train.py --methods baseline,adp,pdd,deg,pdd+deg
    PYTHONPATH=src python examples/train.py --dataset cifar100 --data-root data --download --epochs 150
    PYTHONPATH=src python examples/train.py --resume runs/<run>  # continue an interrupted run
    PYTHONPATH=src python examples/train.py --methods advt-pgd,advt-pgd+pdd  # Table 6
    PYTHONPATH=src torchrun --nproc_per_node 2 examples/train.py ...  # DistributedDataParallel

Every method trains K members simultaneously with the same seed, split and initial weights
(Huang et al., AAAI 2021: eq. 1 for the baseline, Algorithm 1 / eq. 2 for PDD, eqs. 3-4 for
DEG, ADP as the peer baseline); the kept model is the epoch with the best validation accuracy.
The table compares clean test accuracy and the paper's diversity measures (eq. 5, eq. 6 /
Fig. 2, Fig. 3). This file parses the flags (``huang2021/training/config.py`` defines them);
``huang2021/training/compare.py`` runs the training and the comparison.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from huang2021.data.splits import DatasetError
from huang2021.settings import add_flags, as_flags, from_flags
from huang2021.training.compare import resumed_flags, train_and_compare
from huang2021.training.config import Session, TrainingConfig
from huang2021.training.distributed import exit_rank_process


def build_parser(*, defaults: bool = True) -> argparse.ArgumentParser:
    """The command line; ``defaults=False`` parses only the flags actually given."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_flags(parser, TrainingConfig, Session, defaults=defaults)
    return parser


def parse(argv: list[str]) -> tuple[TrainingConfig, Session]:
    """The run's config and this session's flags; with ``--resume``, the stored run's config, refusing a given flag that differs."""
    parser = build_parser()
    flags = vars(parser.parse_args(argv))
    try:
        session = from_flags(Session, flags)
        if session.resume is not None:
            given = vars(build_parser(defaults=False).parse_args(argv))
            run_flags = {key: value for key, value in given.items() if key not in as_flags(session)}
            flags = resumed_flags(session.resume, run_flags)
        return from_flags(TrainingConfig, flags, dataset=flags["dataset"]), session
    except ValueError as error:
        parser.error(str(error))


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    """Run the command; returns the results (as in results.json), or None when the session stopped
    early and on every rank but rank 0 under ``torchrun``."""
    argv = sys.argv[1:] if argv is None else argv
    config, session = parse(argv)
    try:
        return train_and_compare(config, session, argv)
    except DatasetError as error:
        build_parser().error(str(error))


if __name__ == "__main__":
    main()
    exit_rank_process()
