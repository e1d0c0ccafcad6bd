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
Fig. 2, Fig. 3). The run directory holds the config, library versions, per-epoch metrics,
checkpoints, the kept models and the results (see ``ed_examples/run_dir.py``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from ed_examples.adversarial import DEFAULT_ADVERSARIAL_TRAINING, AdversarialTraining
from ed_examples.data import DATASETS, Splits, load_splits
from ed_examples.distributed import Ranks, broadcast_object, check_ranks_agree, init_distributed
from ed_examples.evaluation import comparison, evaluate
from ed_examples.members import ARCHITECTURES, DEFAULT_WIDTH, DESCRIPTION, feature_size
from ed_examples.methods import METHODS, Weights, parse_methods
from ed_examples.run_dir import (
    CONFIG,
    RESULTS,
    create_run_dir,
    library_versions,
    load_json,
    model_path,
    save_json,
    save_torch,
)
from ed_examples.training import PDD_SCALINGS, Recipe, train_method

from ensemble_diversity.ensemble import Ensemble

DEFAULT_METHODS = "baseline,pdd+deg"
SESSION_FLAGS = ("resume", "stop_after_epochs", "download")
"""Flags that steer one session, not the run: they are not part of the stored config."""


def build_parser(*, suppress_defaults: bool = False) -> argparse.ArgumentParser:
    """The command line; with ``suppress_defaults`` only the flags actually given are parsed into the namespace."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress_defaults else value

    run = parser.add_argument_group("run")
    run.add_argument("--methods", default=default(DEFAULT_METHODS), help=f"comma-separated, from {list(METHODS)} (default: %(default)s)")
    run.add_argument("--dataset", default=default("digits"), choices=list(DATASETS), help="digits is embedded in scikit-learn; the others are read from --data-root (default: %(default)s)")
    run.add_argument("--data-root", type=Path, default=default(Path("data")), metavar="DIR", help="folder holding FashionMNIST/, cifar-100-python/ or tiny-imagenet-200/ (default: %(default)s)")
    run.add_argument("--download", action="store_true", default=default(False), help="fetch Fashion-MNIST or CIFAR-100 into --data-root with torchvision if missing (Tiny-ImageNet: manual download)")
    run.add_argument("--val-fraction", type=float, default=default(None), help="share held out for validation (model selection): of the official training split, default 0.1; digits: of the whole set, default 0.2 (another 0.2 is its test split)")
    run.add_argument("--arch", default=default(None), choices=ARCHITECTURES, help="member architecture (default: cnn for digits, resnet18 for the others)")
    run.add_argument("--members", type=int, default=default(3), help="ensemble size K >= 2 (default: %(default)s)")
    run.add_argument("--width", type=int, default=default(None), help=f"cnn: units of the penultimate layer, where PDD acts; resnet*/vgg16: base width, 64 = the real one, PDD on 8 * width units (default: {DEFAULT_WIDTH})")
    run.add_argument("--seed", type=int, default=default(0), help="data split, initial weights, batch order, dropout masks (default: %(default)s)")
    run.add_argument("--device", default=default("cpu"), choices=("cpu", "cuda"), help="(default: %(default)s)")
    run.add_argument("--run-dir", type=Path, default=default(None), help="a new or empty directory for the run's files (default: runs/<timestamp>-<methods>)")
    run.add_argument("--resume", type=Path, default=default(None), metavar="RUN_DIR", help="continue that run from its last completed epoch, with its stored flags")
    run.add_argument("--stop-after-epochs", type=int, default=default(None), metavar="N", help="stop this session after N epochs (all methods together); continue with --resume")
    run.add_argument("--max-batches", type=int, default=default(None), metavar="N", help="train on at most N batches per epoch, for smoke tests (default: all)")
    run.add_argument("--eval-batch-size", type=int, default=default(500), help="images per forward in validation and test evaluation (default: %(default)s)")

    recipe = parser.add_argument_group("optimisation (the authors' recipe, SGD)")
    recipe.add_argument("--epochs", type=int, default=default(None), help="(default: the authors' per data set: fashion-mnist 40, cifar100 150, tiny-imagenet 100; digits 30)")
    recipe.add_argument("--batch-size", type=int, default=default(64), help="(default: %(default)s)")
    recipe.add_argument("--lr", type=float, default=default(0.02), help="learning rate, cosine-annealed per epoch (default: %(default)s)")
    recipe.add_argument("--min-lr", type=float, default=default(1e-4), help="learning rate the cosine reaches at the end (default: %(default)s)")
    recipe.add_argument("--momentum", type=float, default=default(0.9), help="(default: %(default)s)")
    recipe.add_argument("--weight-decay", type=float, default=default(5e-4), help="(default: %(default)s)")
    recipe.add_argument("--ce-reduction", default=default("auto"), choices=("auto", "mean", "sum"), help="members' CE terms in eq. 1: auto = sum for adp (Pang et al.'s code, which tuned its weights), mean for the others (the PDD/DEG authors' code); mean or sum = that for every method (default: %(default)s)")

    method = parser.add_argument_group("regularisers")
    method.add_argument("--alpha", type=float, default=default(0.9), help="PDD keep rate in a member's priority interval, eq. 2 (default: %(default)s)")
    method.add_argument("--beta", type=float, default=default(0.1), help="PDD keep-rate scale outside it, eq. 2 (default: %(default)s)")
    method.add_argument("--pdd-scaling", default=default("inverted"), choices=PDD_SCALINGS, help="inverted: kept units divided by their keep rate, so test time (PDD off) sees the training scale (the library's default); authors: no rescaling, the authors' code and the paper's tables (default: %(default)s)")
    method.add_argument("--pdd-statistics", default=default("sample"), choices=("sample", "batch"), help="PDD's range and histogram per sample (the authors' code) or per batch, all-reduced over ranks under torchrun (default: %(default)s)")
    method.add_argument("--num-intervals", type=int, default=default(None), help="PDD intervals M > K (default: the library's, M=10 for K=3)")
    method.add_argument("--deg-lambda", type=float, default=default(0.01), help="DEG weight lambda, eq. 4 (default: %(default)s)")
    method.add_argument("--deg-every", type=int, default=default(1), metavar="N", help="compute the DEG/GAL penalty on every N-th step only, a cheaper setting (default: %(default)s, every step)")
    method.add_argument("--gal-lambda", type=float, default=default(0.5), help="GAL weight (DVERGE's re-implementation of GAL) (default: %(default)s)")
    method.add_argument("--adp-alpha", type=float, default=default(2.0), help="ADP ensemble-entropy weight (default: %(default)s)")
    method.add_argument("--adp-beta", type=float, default=default(0.5), help="ADP log-det weight (default: %(default)s)")
    _add_adversarial_flags(parser, default)
    return parser


def _add_adversarial_flags(parser: argparse.ArgumentParser, default: Any) -> None:
    """Adversarial training (the advt-* methods, Table 6) and mixed precision; defaults: ed_examples/adversarial.py."""
    advt = parser.add_argument_group("adversarial training (advt-* methods) and precision")
    preset = DEFAULT_ADVERSARIAL_TRAINING
    advt.add_argument("--advt-eps", type=float, nargs="+", default=default(list(preset.eps)), metavar="EPS", help="L_inf bound in [0, 1]: one value fixes it, two (LOW HIGH) draw it per batch uniformly (default: %(default)s, ADP's AdvT)")
    advt.add_argument("--advt-steps", type=int, default=default(preset.steps), help="PGD iterations (default: %(default)s)")
    advt.add_argument("--advt-step-size", type=float, default=default(preset.step_size), help="PGD step (default: eps / 10 of each batch)")
    advt.add_argument("--advt-random-start", action=argparse.BooleanOptionalAction, default=default(preset.random_start), help="PGD starts at a uniform point of the eps-ball (default: %(default)s)")
    advt.add_argument("--advt-weight", type=float, default=default(preset.weight), help="w in (1 - w) loss(clean) + w loss(adversarial), in (0, 1] (default: %(default)s)")
    advt.add_argument("--advt-labels", default=default(preset.labels), choices=("predicted", "true"), help="labels the attack moves away from: the ensemble's predictions or the true ones (default: %(default)s)")
    advt.add_argument("--advt-craft-mode", default=default(preset.craft_mode), choices=("train", "eval"), help="members' and PDD's mode while crafting (default: %(default)s)")
    advt.add_argument("--amp", default=default("none"), choices=("none", "bf16"), help="autocast the training forward passes and losses to bfloat16, CPU or CUDA (default: %(default)s)")


def parse_flags(argv: list[str]) -> dict[str, Any]:
    """Resolved flags; with ``--resume``, the stored run's flags, refusing any given flag that differs."""
    parser = build_parser()
    flags = vars(parser.parse_args(argv))
    if flags["resume"] is not None:
        flags = _resumed_flags(parser, flags, vars(build_parser(suppress_defaults=True).parse_args(argv)))
    try:
        _check_flags(flags)
    except ValueError as error:
        parser.error(str(error))
    # Stored resolved, so config.json says which members a run trained.
    flags["arch"] = flags["arch"] or ("cnn" if flags["dataset"] == "digits" else "resnet18")
    flags["width"] = flags["width"] or DEFAULT_WIDTH[flags["arch"]]
    flags["epochs"] = flags["epochs"] or DATASETS[flags["dataset"]].epochs
    return flags


def _resumed_flags(parser: argparse.ArgumentParser, flags: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    run_dir = flags["resume"]
    if not (run_dir / CONFIG).exists():
        parser.error(f"--resume: {str(run_dir)!r} is not a run directory (it has no {CONFIG})")
    config = load_json(run_dir / CONFIG)
    # A run started before a flag existed ran with that flag's default.
    stored = {**_run_flags(vars(parser.parse_args([]))), **config["flags"], "run_dir": str(run_dir)}
    given = _run_flags(given)
    differing = [key for key, value in given.items() if stored.get(key) != value]
    if differing:
        detail = "; ".join(f"--{key.replace('_', '-')} is {stored.get(key)!r} in the run, {given[key]!r} here" for key in differing)
        parser.error(f"--resume: the config differs from the run being resumed ({detail}); start a new run instead")
    if config["versions"] != library_versions():
        print(f"note: resuming with other library versions than the run started with: {config['versions']} then, {library_versions()} now")
    # Parser defaults under the stored flags: a run from an earlier version lacks the newer flags.
    defaults = _run_flags(vars(build_parser().parse_args([])))
    return {**defaults, **stored, "run_dir": run_dir, **{key: flags[key] for key in SESSION_FLAGS}}


def _run_flags(flags: dict[str, Any]) -> dict[str, Any]:
    """The flags that define the run, as stored in config.json (paths as strings)."""
    return {key: str(value) if isinstance(value, Path) else value for key, value in flags.items() if key not in SESSION_FLAGS}


def _check_flags(flags: dict[str, Any]) -> None:
    """Raise ValueError naming the flag for values argparse's types cannot rule out."""
    parse_methods(flags["methods"])
    if flags["members"] < 2:
        raise ValueError(f"Expected --members (K) to be an integer >= 2 (an ensemble), but got {flags['members']}")
    for key in ("epochs", "batch_size", "width", "max_batches", "stop_after_epochs", "deg_every", "advt_steps", "eval_batch_size"):
        if flags[key] is not None and flags[key] < 1:
            raise ValueError(f"Expected --{key.replace('_', '-')} to be >= 1, but got {flags[key]}")
    for key in ("alpha", "beta"):
        if not 0.0 <= flags[key] <= 1.0:
            raise ValueError(f"Expected --{key} to be in [0, 1] (a keep rate of eq. 2), but got {flags[key]}")
    if flags["val_fraction"] is not None and not 0.0 < flags["val_fraction"] < (0.5 if flags["dataset"] == "digits" else 1.0):
        limit = "0.5 (digits: as much again is its test split)" if flags["dataset"] == "digits" else "1"
        raise ValueError(f"Expected --val-fraction to be in (0, {limit}), but got {flags['val_fraction']}")
    if flags["num_intervals"] is not None and flags["num_intervals"] <= flags["members"]:
        raise ValueError(f"Expected --num-intervals to exceed --members (M > K), but got {flags['num_intervals']} and {flags['members']}")
    eps = flags["advt_eps"]
    if not 1 <= len(eps) <= 2 or not all(0.0 <= value <= 1.0 for value in eps) or eps[0] > eps[-1]:
        raise ValueError(f"Expected --advt-eps to be one value or LOW <= HIGH, in [0, 1], but got {eps}")
    if flags["advt_step_size"] is not None and flags["advt_step_size"] <= 0:
        raise ValueError(f"Expected --advt-step-size to be > 0, but got {flags['advt_step_size']}")
    if not 0.0 < flags["advt_weight"] <= 1.0:
        raise ValueError(f"Expected --advt-weight to be in (0, 1], but got {flags['advt_weight']}")
    if flags["device"] == "cuda" and not torch.cuda.is_available():
        raise ValueError("Expected --device cuda to find a CUDA device, but torch.cuda.is_available() is False; use --device cpu")


def _recipe(flags: dict[str, Any]) -> Recipe:
    return Recipe(
        dataset=flags["dataset"],
        arch=flags["arch"],
        num_members=flags["members"],
        width=flags["width"],
        epochs=flags["epochs"],
        batch_size=flags["batch_size"],
        lr=flags["lr"],
        min_lr=flags["min_lr"],
        momentum=flags["momentum"],
        weight_decay=flags["weight_decay"],
        alpha=flags["alpha"],
        beta=flags["beta"],
        pdd_scaling=flags["pdd_scaling"],
        pdd_statistics=flags["pdd_statistics"],
        num_intervals=flags["num_intervals"],
        weights=Weights(flags["ce_reduction"], flags["deg_lambda"], flags["adp_alpha"], flags["adp_beta"], flags["gal_lambda"]),
        seed=flags["seed"],
        max_batches=flags["max_batches"],
        deg_every=flags["deg_every"],
        adversarial=AdversarialTraining(
            eps=(flags["advt_eps"][0], flags["advt_eps"][-1]),
            steps=flags["advt_steps"],
            step_size=flags["advt_step_size"],
            random_start=flags["advt_random_start"],
            weight=flags["advt_weight"],
            labels=flags["advt_labels"],
            craft_mode=flags["advt_craft_mode"],
        ),
        amp=flags["amp"],
        eval_batch_size=flags["eval_batch_size"],
    )


def _load_data(flags: dict[str, Any], device: torch.device) -> Splits:
    """The data set's splits; a missing or wrong data set stops the command with its message."""
    try:
        return load_splits(
            flags["dataset"], Path(flags["data_root"]), flags["seed"], device, val_fraction=flags["val_fraction"], download=flags["download"]
        )
    except ValueError as error:
        build_parser().error(str(error))


def _open_run_dir(flags: dict[str, Any], argv: list[str]) -> Path:
    """The run directory: the resumed one as it is, or a new one with ``config.json`` written."""
    if flags["resume"] is not None:
        return flags["run_dir"]
    if flags["run_dir"] is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        flags["run_dir"] = Path("runs") / f"{stamp}-{flags['methods'].replace(',', '_')}"
    run_dir = create_run_dir(flags["run_dir"])
    save_json(run_dir / CONFIG, {"flags": _run_flags(flags), "versions": library_versions(), "argv": argv})
    return run_dir


def format_table(results: dict[str, Any]) -> str:
    """The comparison table as printed (and stored in results.json)."""
    width = max(10, *map(len, results["methods"]))
    header = f"{'method':<{width}} {'test acc %':>10} {'E (eq.5)':>9} {'L_F (eq.6)':>11} {'angle deg':>10} {'train s':>8} {'best ep':>8}"
    lines = [header, "-" * len(header)]
    for name, row in results["methods"].items():
        lines.append(
            f"{name:<{width}} {100 * row['test_accuracy']:>10.2f} {row['ambiguity_entropy']:>9.4f} "
            f"{row['discrimination_score']:>11.4f} {row['gradient_angle_degrees']:>10.2f} "
            f"{row['train_seconds']:>8.1f} {row['best_epoch']:>8d}"
        )
    lines.append(
        f"E and accuracy over all {results['test_images']} test images; L_F and angle over the "
        f"{results['images_correct_for_all_methods']} classified correctly by every method (as in Figs. 2-3)."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    """Run the command; returns the results (as in results.json), or None when the session stopped
    early and on every rank but rank 0 under ``torchrun``."""
    argv = sys.argv[1:] if argv is None else argv
    flags = parse_flags(argv)
    if flags["resume"] is not None and (flags["run_dir"] / RESULTS).exists():
        results = load_json(flags["run_dir"] / RESULTS)
        print(f"{flags['run_dir']} is complete; its results:\n{format_table(results)}")
        return results
    ranks = init_distributed(flags["device"])
    try:
        result = _train_and_compare(flags, argv, ranks)
        if ranks.distributed:
            # Rank 0 still evaluates the test split when the others are done; tearing the group
            # down under it aborted a rank (gloo) now and then, so all ranks leave together.
            dist.barrier()
        return result
    finally:
        if ranks.distributed:
            dist.destroy_process_group()


def _train_and_compare(flags: dict[str, Any], argv: list[str], ranks: Ranks) -> dict[str, Any] | None:
    say = print if ranks.is_main else _silent
    device = torch.device(flags["device"], ranks.local_rank) if flags["device"] == "cuda" and ranks.distributed else torch.device(flags["device"])
    recipe = _recipe(flags)
    # Before the run directory: a missing data set leaves no empty run behind.
    splits = _load_data(flags, device)
    run_dir = Path(broadcast_object(str(_open_run_dir(flags, argv)) if ranks.is_main else None, ranks))
    say(f"run directory: {run_dir}")
    description = DESCRIPTION[recipe.arch].format(width=recipe.width, features=feature_size(recipe.arch, recipe.width))
    say(f"data: {recipe.dataset}, {len(splits.train.labels)} training / {len(splits.validation.labels)} validation / {len(splits.test.labels)} test images")
    say(f"members: K={recipe.num_members} {description}")
    if ranks.distributed:
        say(f"distributed: {ranks.world_size} processes, each a 1/{ranks.world_size} shard of every batch of {recipe.batch_size}")

    budget = flags["stop_after_epochs"]
    trained = {}
    for name in parse_methods(flags["methods"]):
        try:
            method = train_method(name, recipe, splits, run_dir, device, epoch_budget=budget, ranks=ranks)
        except KeyboardInterrupt:
            say(f"\ninterrupted; continue with: python {__file__} --resume {run_dir}")
            raise SystemExit(130) from None
        if method is None:
            say(f"stopped after --stop-after-epochs; continue with: python {__file__} --resume {run_dir}")
            return None
        if ranks.distributed:
            digest = check_ranks_agree(method.members, ranks)
            say(f"{name}: all {ranks.world_size} ranks hold the same kept members (sha256 {digest})")
            if method.pdd is not None:
                check_ranks_agree(method.pdd, ranks)
                counts = method.pdd.priority_counts.tolist()
                say(f"{name}: all {ranks.world_size} ranks hold the same PDD priority counts (member x interval): {counts}")
        if budget is not None:
            budget -= method.epochs_run
        trained[name] = method
        if ranks.is_main and not model_path(run_dir, name).exists():
            save_torch(
                model_path(run_dir, name),
                {
                    "ensemble": Ensemble(method.members).state_dict(),
                    "members": recipe.num_members,
                    "arch": recipe.arch,
                    "width": recipe.width,
                    "dataset": recipe.dataset,
                    "in_channels": DATASETS[recipe.dataset].in_channels,
                    "num_classes": DATASETS[recipe.dataset].num_classes,
                    "best_epoch": method.best_epoch,
                    "val_accuracy": method.val_accuracy,
                },
            )
    if not ranks.is_main:
        return None

    results = comparison({name: evaluate(method.members, splits.test, recipe.eval_batch_size) for name, method in trained.items()})
    for name, method in trained.items():
        results["methods"][name].update(
            train_seconds=method.train_seconds, best_epoch=method.best_epoch, val_accuracy=method.val_accuracy
        )
    save_json(run_dir / RESULTS, results)
    print(format_table(results))
    return results


def _silent(*args: Any, **kwargs: Any) -> None:
    """``print`` on the ranks that do not report (all but rank 0)."""


if __name__ == "__main__":
    main()
