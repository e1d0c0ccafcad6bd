"""Attack the ensembles of training runs like the paper does, and with stronger attacks beside it.

    PYTHONPATH=src python examples/evaluate.py runs/<run> --out-dir runs/<run>-eval
    PYTHONPATH=src python examples/evaluate.py runs/<seed-0-run> runs/<seed-1-run> runs/<seed-2-run>  # means over seeds
    PYTHONPATH=src python examples/evaluate.py runs/<run> runs/<authors-scaling-run> \\
        --type1-surrogate runs/<surrogate-run> --type2-surrogate runs/<surrogate-run> --limit 100

Loads every method's kept ensemble from each RUN_DIR (written by ``examples/train.py``) and
runs, on the first ``--limit`` test images: the paper protocol (Tables 2, 3, 5: FGSM, BIM,
PGD, JSMA, C&W as the authors' code runs them), the strong protocol (PGD with 100 steps and
5 restarts on the averaged logits and on the log averaged probabilities, a MORA-style attack
on the members, AutoAttack, in sequence) at the same epsilons, black-box transfer from
surrogate runs (Table 4), a PGD epsilon sweep (Fig. 4) and the diversity analysis (Table 1,
Figs. 1-3). Runs of several ``--seed`` values are evaluated together, each on its own test
split, and the report gives means and spreads over them. Each result is written as soon as
its attack finishes; a rerun with the same ``--out-dir`` skips finished attacks. This file
parses the flags; ``huang2021/evaluation/robustness.py`` defines them and runs the evaluation, ``huang2021/evaluation/report.py`` writes the report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from huang2021.settings import add_flags, from_flags

try:
    from huang2021.evaluation.robustness import EvaluationConfig, Targets, evaluate_robustness, load_targets, open_out_dir, without_diversity
except ModuleNotFoundError as error:  # the evaluation extra (ART, matplotlib) is not installed
    MISSING: str | None = error.name
else:
    MISSING = None
EXTRA = "pip install -e '.[evaluation]' (the Adversarial Robustness Toolbox and matplotlib)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="training run directories (examples/train.py) whose ensembles are the targets")
    if MISSING is not None:
        # --help still answers, and says what to install to see (and use) the flags.
        parser.epilog = f"The evaluation flags need the evaluation extra, which is not installed (no module {MISSING!r}): {EXTRA}"
        return parser
    add_flags(parser, EvaluationConfig)
    return parser


def parse(argv: list[str]) -> tuple[EvaluationConfig, Targets, list[Path]]:
    """The settings (the targets' data set's defaults filled in), the targets and the run directories; errors name the flag."""
    parser = build_parser()
    flags = vars(parser.parse_args(argv))
    if MISSING is not None:
        parser.error(f"the evaluation needs the evaluation extra, which is not installed (no module {MISSING!r}): {EXTRA}")
    run_dirs = flags.pop("run_dirs")
    try:
        surrogates = [("--type1-surrogate", flags["type1_surrogate"]), ("--type2-surrogate", flags["type2_surrogate"])]
        targets = load_targets(run_dirs, dataset=flags["dataset"], surrogates=surrogates, methods=flags["methods"])
        dataset = targets.dataset
        if len(targets.ensembles) > 1:
            flags["attacks"] = without_diversity(flags["attacks"], seeds=sorted(targets.ensembles))
        return from_flags(EvaluationConfig, {**flags, "dataset": dataset}, dataset=dataset), targets, run_dirs
    except ValueError as error:
        parser.error(str(error))


def main(argv: list[str] | None = None) -> Path:
    """Run the command; returns the evaluation directory."""
    argv = sys.argv[1:] if argv is None else argv
    config, targets, run_dirs = parse(argv)
    try:
        out_dir = open_out_dir(config, run_dirs, argv)
    except ValueError as error:
        build_parser().error(str(error))
    evaluate_robustness(config, targets, out_dir)
    return out_dir


if __name__ == "__main__":
    main()
