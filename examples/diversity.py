"""The paper's diversity analysis (Table 1, Figs. 1-3) of the ensembles of a training run.

    PYTHONPATH=src python examples/diversity.py runs/<run>                 # writes runs/<run>/diversity/
    PYTHONPATH=src python examples/diversity.py runs/<run> --out report --threshold 1.0

Loads every kept model (``model-<method>.pt``) of a run directory written by
``examples/train.py``, rebuilds its test split from the run's seed, and writes
``huang2021.evaluation.diversity_analysis.diversity_section``'s data, figures and Markdown to
``--out``. This file parses the flags; ``huang2021/evaluation/diversity_analysis.py`` defines
them and runs the analysis.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from huang2021.evaluation.diversity_analysis import DiversitySettings, analyse_run, load_run
from huang2021.settings import add_flags, from_flags


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory of examples/train.py")
    add_flags(parser, DiversitySettings)
    return parser


def main(argv: list[str] | None = None) -> Path:
    """Run the command; returns the output directory."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    flags = vars(parser.parse_args(argv))
    try:
        settings = from_flags(DiversitySettings, flags)
        run = load_run(flags["run_dir"], settings)
    except ValueError as error:
        parser.error(str(error))
    out, section = analyse_run(run, settings, argv)
    print(section.markdown)
    print(f"written to {out}")
    return out


if __name__ == "__main__":
    main()
