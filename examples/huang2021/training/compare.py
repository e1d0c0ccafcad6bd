"""The run of ``examples/train.py``: every method trained in turn into one run directory, then compared on the test split.

Every method trains K members from the same seed, split, initial weights and batch order
(:mod:`.loop`); the kept model is the epoch with the best validation accuracy. The comparison
(:func:`format_table`) holds clean test accuracy and the paper's diversity measures (eq. 5,
eq. 6 / Fig. 2, Fig. 3; :mod:`huang2021.measures.clean`). The run directory
(:mod:`huang2021.run_dir`) holds the config, library versions, per-epoch metrics, checkpoints,
the kept models and the results.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..data.splits import Splits, load_splits
from ..measures.clean import comparison, evaluate
from ..measures.ensemble_pgd import robust_correct
from ..members import DESCRIPTION, feature_size
from ..run_dir import CONFIG, RESULTS, create_run_dir, library_versions, load_json, model_path, save_json
from ..settings import as_flags
from .checkpoints import save_kept_model
from .config import Session, TrainingConfig
from .distributed import Ranks, broadcast_object, check_ranks_agree, init_distributed
from .loop import TrainedMethod, TrainingDiverged, train_method
from .methods import parse_methods

COMMAND = "python examples/train.py"


def resumed_flags(run_dir: Path, given: dict[str, Any]) -> dict[str, Any]:
    """The stored flags of the run in ``run_dir``, which ``given`` (the flags the command line gave) must match.

    Raises ValueError naming ``--resume`` when ``run_dir`` holds no run, or the differing flags.
    """
    if not (run_dir / CONFIG).exists():
        raise ValueError(f"--resume: {str(run_dir)!r} is not a run directory (it has no {CONFIG})")
    config = load_json(run_dir / CONFIG)
    stored = {**config["flags"], "run_dir": str(run_dir)}
    given = {key: str(value) if isinstance(value, Path) else value for key, value in given.items()}
    if differing := [key for key, value in given.items() if stored[key] != value]:
        detail = "; ".join(f"--{key.replace('_', '-')} is {stored[key]!r} in the run, {given[key]!r} here" for key in differing)
        raise ValueError(f"--resume: the config differs from the run being resumed ({detail}); start a new run instead")
    if config["versions"] != library_versions():
        print(f"note: resuming with other library versions than the run started with: {config['versions']} then, {library_versions()} now")
    return stored


def train_and_compare(config: TrainingConfig, session: Session, argv: list[str]) -> dict[str, Any] | None:
    """Train every method of ``config`` and compare them; returns the results (as in results.json), or None
    when the session stopped early and on every rank but rank 0 under ``torchrun``.

    Raises :class:`~huang2021.data.splits.DatasetError` for a missing or wrong data set, before
    any file is written.
    """
    if session.resume is not None and (session.resume / RESULTS).exists():
        results = load_json(session.resume / RESULTS)
        print(f"{session.resume} is complete; its results:\n{format_table(results)}")
        return results
    ranks = init_distributed(config.run.device)
    try:
        result = _train_and_compare(config, session, argv, ranks)
        if ranks.distributed:
            # Rank 0 still evaluates the test split when the others are done; tearing the group
            # down under it aborted a rank (gloo) now and then, so all ranks leave together
            # (examples/train.py then ends each rank without finalizing: exit_rank_process).
            dist.barrier()
        return result
    finally:
        if ranks.distributed:
            dist.destroy_process_group()


def _train_and_compare(config: TrainingConfig, session: Session, argv: list[str], ranks: Ranks) -> dict[str, Any] | None:
    say = print if ranks.is_main else _silent
    run = config.run
    device = torch.device(run.device, ranks.local_rank) if run.device == "cuda" and ranks.distributed else torch.device(run.device)
    # Before the run directory: a missing data set leaves no empty run behind.
    splits = load_splits(run.dataset, run.data_root, run.seed, device, val_fraction=run.val_fraction, download=session.download)
    run_dir = Path(broadcast_object(str(_open_run_dir(config, session, argv)) if ranks.is_main else None, ranks))
    say(f"run directory: {run_dir}")
    description = DESCRIPTION[run.arch].format(width=run.width, features=feature_size(run.arch, run.width))
    say(f"data: {run.dataset}, {len(splits.train.labels)} training / {len(splits.validation.labels)} validation / {len(splits.test.labels)} test images")
    say(f"members: K={run.members} {description}")
    if ranks.distributed:
        say(f"distributed: {ranks.world_size} processes, each a 1/{ranks.world_size} shard of every batch of {config.optimisation.batch_size}")

    budget = session.stop_after_epochs
    trained, diverged = {}, []
    for name in parse_methods(run.methods):
        try:
            method = train_method(name, config, splits, run_dir, device, epoch_budget=budget, ranks=ranks)
        except KeyboardInterrupt:
            say(f"\ninterrupted; continue with: {COMMAND} --resume {run_dir}")
            raise SystemExit(130) from None
        except TrainingDiverged as error:
            # One method's divergence says nothing about the others, which train on.
            say(f"\n{error}")
            diverged.append(name)
            continue
        if method is None:
            say(f"stopped after --stop-after-epochs; continue with: {COMMAND} --resume {run_dir}")
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
            save_kept_model(run_dir, name, method.members, config, best_epoch=method.best_epoch, val_accuracy=method.val_accuracy)
    if not ranks.is_main:
        return None
    if diverged:
        if trained:
            print(format_table(_compared(trained, splits, config)))
        # No results.json: the run is incomplete, and a resume retries the diverged methods.
        raise SystemExit(f"diverged: {', '.join(diverged)} (see above); the other methods' results are not saved as the run's ({run_dir})")

    results = _compared(trained, splits, config)
    save_json(run_dir / RESULTS, results)
    print(format_table(results))
    return results


def _compared(trained: dict[str, TrainedMethod], splits: Splits, config: TrainingConfig) -> dict[str, Any]:
    """The comparison of the trained methods on the test split, with their training records and the robustness column."""
    batch_size = config.run.eval_batch_size
    results = comparison({name: evaluate(method.members, splits.test, batch_size) for name, method in trained.items()})
    robustness = config.robustness
    if robustness.robust_eps:
        results["robustness"] = {
            "attack": f"PGD-{robustness.robust_steps}" + (f"x{robustness.robust_restarts}" if robustness.robust_restarts > 1 else ""),
            "norm": "inf",
            "eps": list(robustness.robust_eps),
            "steps": robustness.robust_steps,
            "restarts": robustness.robust_restarts,
            "step_size": "2.5 eps / steps",
            "objective": "cross-entropy of the averaged logits, true labels",
        }
    for name, method in trained.items():
        row = results["methods"][name]
        row.update(train_seconds=method.train_seconds, best_epoch=method.best_epoch, val_accuracy=method.val_accuracy)
        if robustness.robust_eps:
            start = time.perf_counter()
            row["robust_accuracy"] = {
                f"{eps:g}": robust_correct(
                    method.members, splits.test, eps, steps=robustness.robust_steps, restarts=robustness.robust_restarts,
                    batch_size=batch_size, seed=config.run.seed,
                ).float().mean().item()
                for eps in robustness.robust_eps
            }  # fmt: skip
            row["robust_seconds"] = time.perf_counter() - start
    return results


def _open_run_dir(config: TrainingConfig, session: Session, argv: list[str]) -> Path:
    """The run directory: the resumed one as it is, or a new one with ``config.json`` written."""
    if session.resume is not None:
        return session.resume
    run_dir = config.run.run_dir or Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{config.run.methods.replace(',', '_')}"
    create_run_dir(run_dir)
    save_json(run_dir / CONFIG, {"flags": {**as_flags(config), "run_dir": str(run_dir)}, "versions": library_versions(), "argv": argv})
    return run_dir


def format_table(results: dict[str, Any]) -> str:
    """The comparison table as printed (and stored in results.json)."""
    width = max(10, *map(len, results["methods"]))
    robustness = results.get("robustness")
    robust_columns = [f"{robustness['attack']} {eps:g}" for eps in robustness["eps"]] if robustness else []
    header = f"{'method':<{width}} {'test acc %':>10} " + "".join(f"{column:>{len(column) + 1}} " for column in robust_columns)
    header += f"{'E (eq.5)':>9} {'L_F (eq.6)':>11} {'angle deg':>10} {'train s':>8} {'best ep':>8}"
    lines = [header, "-" * len(header)]
    for name, row in results["methods"].items():
        robust = "".join(f"{100 * row['robust_accuracy'][f'{eps:g}']:>{len(column) + 1}.2f} " for eps, column in zip(robustness["eps"], robust_columns)) if robustness else ""
        lines.append(
            f"{name:<{width}} {100 * row['test_accuracy']:>10.2f} {robust}{row['ambiguity_entropy']:>9.4f} "
            f"{row['discrimination_score']:>11.4f} {row['gradient_angle_degrees']:>10.2f} "
            f"{row['train_seconds']:>8.1f} {row['best_epoch']:>8d}"
        )
    lines.append(
        f"E and accuracy over all {results['test_images']} test images; L_F and angle over the "
        f"{results['images_correct_for_all_methods']} classified correctly by every method (as in Figs. 2-3)."
    )
    if robustness:
        lines.append(
            f"{robustness['attack']} EPS: accuracy % over all test images under L_inf PGD with {robustness['steps']} steps of "
            f"2.5 eps / steps from a random start ({robustness['restarts']} start(s)) on the averaged logits with the true labels, "
            "one white-box attack: examples/evaluate.py is the full evaluation (docs/evaluation.md)."
        )
    return "\n".join(lines)


def _silent(*args: Any, **kwargs: Any) -> None:
    """``print`` on the ranks that do not report (all but rank 0)."""
