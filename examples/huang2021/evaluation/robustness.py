"""The robustness evaluation of ``examples/evaluate.py``: the kept ensembles of training runs under every attack.

:func:`evaluate_robustness` loads every method's kept ensemble from each run directory and runs,
per training seed on the first ``--limit`` images of that seed's test split: the paper protocol
(Tables 2, 3, 5: FGSM, BIM, PGD, JSMA, C&W as the authors' code runs them), the strong protocol
(PGD on the averaged logits and on the log averaged probabilities, MORA-style, optionally the
library's APGD-CE and APGD-DLR, AutoAttack, each on the survivors of the ones before) at the
same epsilons, black-box transfer from surrogate runs (Table 4), a PGD epsilon sweep (Fig. 4) and the diversity analysis (Table 1, Figs. 1-3). Which attacks run at
which parameters is data (:class:`EvaluationRun`, :class:`AttackParameters`,
:class:`~.attacks.AttackSettings`), stored in the evaluation directory's ``config.json``. Each
result is written as soon as its attack finishes (:mod:`.results`); a rerun with the same
``--out-dir`` skips finished attacks. The report and its figures are :mod:`.report`'s.
"""

from __future__ import annotations

import argparse
import time
import zlib
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from ensemble_diversity import Ensemble
from ensemble_diversity import attacks as library

from ..data.splits import Split
from ..measures.clean import correct_on
from ..measures.ensemble_pgd import Objective, attack_losses, ensemble_pgd
from ..progress import batch_progress
from ..run_dir import CONFIG, create_run_dir, library_versions, load_json, save_json
from ..settings import AT_LEAST_ONE, Check, as_flags, device_flag, flag
from ..training.checkpoints import load_test_split, load_trained_ensembles, run_flags
from ..training.methods import METHODS
from .attacks import (
    LIBRARY_APGD,
    PAPER_ATTACKS,
    PAPER_GROUP,
    PARAMETER,
    STRONG_ATTACKS,
    STRONG_OBJECTIVES,
    TRANSFER_ATTACKS,
    AttackSettings,
    craft,
)
from .diversity_analysis import MARKDOWN as DIVERSITY_MARKDOWN
from .diversity_analysis import diversity_section
from .report import DIVERSITY_DIR, REPORT, write_report
from .results import ResultStore, result_key, robust_result

SWEEPS = ("sweep", "sweep-strong")
"""Fig. 4: the paper protocol's PGD, and the strong protocol's, over increasing epsilons under L_inf and L_2 (the defaults double)."""
ATTACKS = (*PAPER_ATTACKS, *STRONG_ATTACKS, "transfer", *SWEEPS, "diversity")
"""``--attacks`` names; ``diversity`` is the paper's diversity analysis (Table 1, Figs. 1-3), no attack."""
DEFAULT_ATTACKS = tuple(name for name in ATTACKS if name not in LIBRARY_APGD)
"""``--attacks`` by default (less ``transfer`` without a surrogate): the library's APGD only when asked for, ART's AutoAttack is the strong protocol's last stage."""
NEUTRAL_FLAGS = ("attacks", "methods", "device", "threads", "fgsm_eps", "bim_eps", "pgd_eps", "jsma_gamma", "cw_const", "sweep_linf", "sweep_l2")
"""Flags that choose which results to compute, not what a result means: a resumed evaluation may change them."""
STRONG_OUTPUTS = {
    "pgd-strong": "logits",
    "pgd-probs": "probabilities",
    "mora": "members (MORA-style mix)",
    "apgd-ce": "logits",
    "apgd-dlr": "averaged logits (DLR loss)",
    "autoattack": "probabilities",
}
"""What each strong attack's objective is computed from (a result's ``model_output``; "logits" and "probabilities": the members' averaged ones)."""
AUTHORS_SCALING = " (authors' scaling)"
"""Label suffix of a PDD ensemble trained without rescaling (``--pdd-scaling authors``); plain "pdd" is inverted dropout."""

PAPER_PARAMETERS: dict[str, dict[str, list[float]]] = {
    # Table 2 (K=3), Table 4 (transfer), whitebox_test.py (Fig. 4 sweeps).
    "fashion-mnist": {"fgsm": [0.01, 0.02], "bim": [0.01, 0.02], "pgd": [0.01, 0.02], "jsma": [0.1, 0.2], "cw": [0.1]},
    "cifar100": {"fgsm": [0.02, 0.04], "bim": [0.01, 0.02], "pgd": [0.01, 0.02], "jsma": [0.05, 0.1], "cw": [0.01]},
    "tiny-imagenet": {"fgsm": [0.02, 0.04], "bim": [0.01, 0.02], "pgd": [0.01, 0.02], "jsma": [0.05, 0.1], "cw": [0.01]},
    # The paper has no digits; a grid where an undefended K=3 ensemble's accuracy falls clearly
    # (docs/evaluation.md, "The digits grid").
    "digits": {"fgsm": [0.05, 0.1, 0.2], "bim": [0.05, 0.1], "pgd": [0.05, 0.1], "jsma": [0.05, 0.1], "cw": [0.1]},
}
"""The paper protocol's parameters (Table 2's "Para.") per data set and attack."""
PAPER_SWEEPS = {"linf": [0.005 * 2**i for i in range(8)], "l2": [0.1 * 2**i for i in range(8)]}
"""The authors' sweep epsilons (whitebox_test.py): 0.005 ... 0.64 under L_inf, 0.1 ... 12.8 under L_2."""
DIGITS_SWEEPS = {"linf": [0.025 * 2**i for i in range(5)], "l2": [0.25 * 2**i for i in range(5)]}
"""digits: 0.025 ... 0.4 under L_inf, 0.25 ... 4 under L_2 (an 8x8 image's L_2 radius is 8 times its L_inf one):
from about clean accuracy to zero for a K=3 baseline (docs/evaluation.md, "The digits grid")."""


def _floats(text: str) -> list[float]:
    """A comma-separated list of numbers: the type of the parameter flags."""
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, but got {text!r}") from None


PIXELS = Check(lambda values: all(0.0 <= value <= 1.0 for value in values), "values in [0, 1] (pixels lie in [0, 1])")
POSITIVE = Check(lambda values: all(value > 0.0 for value in values), "positive values")


def _paper(attack: str, what: str, check: Check) -> Any:
    """The flag of the paper protocol's parameters of ``attack``, by data set (:data:`PAPER_PARAMETERS`)."""
    per_dataset = {dataset: parameters[attack] for dataset, parameters in PAPER_PARAMETERS.items()}
    return flag(MISSING, f"comma-separated {what} values of {attack.upper()}", check=check, per_dataset=per_dataset, group=PAPER_GROUP, type=_floats, metavar="LIST")


@dataclass(frozen=True, kw_only=True)
class EvaluationRun:
    """run"""

    out_dir: Path | None = flag(None, "directory for results, report, figures; an existing one is resumed", shown="runs/<timestamp>-evaluate", type=Path)
    attacks: str | None = flag(
        None, f"comma-separated, from {list(ATTACKS)}", shown="all but apgd-ce, apgd-dlr; 'transfer' only with a surrogate, 'diversity' only for targets of one --seed"
    )
    limit: int | None = flag(None, "evaluate the first N test images of each seed's test split", check=AT_LEAST_ONE, shown="all", type=int, metavar="N")
    methods: str | None = flag(None, "comma-separated target labels to evaluate, e.g. baseline,pdd+deg (as the report's columns name them)", shown="every ensemble of the RUN_DIRs")
    dataset: str | None = flag(None, "expected data set of every RUN_DIR", shown="theirs")
    seed: int = flag(0, "random starts of the attacks")
    device: str = device_flag("where the ensembles run")
    threads: int | None = flag(None, "torch CPU threads (1 is much faster for small models on a busy machine)", check=AT_LEAST_ONE, shown="torch's", type=int)
    type1_surrogate: Path | None = flag(None, "Table 4 Type I: a run whose baseline ensemble crafts transfer attacks", type=Path, metavar="RUN_DIR")
    type2_surrogate: Path | None = flag(None, "Table 4 Type II: a run whose ensemble of the target's own method crafts them", type=Path, metavar="RUN_DIR")

    def __post_init__(self) -> None:
        surrogate = self.type1_surrogate is not None or self.type2_surrogate is not None
        text = ",".join(name for name in DEFAULT_ATTACKS if name != "transfer" or surrogate) if self.attacks is None else self.attacks
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in ATTACKS]
        if not names or unknown:
            raise ValueError(f"Expected --attacks to be a comma-separated list of {list(ATTACKS)}, but got {text!r} (unknown: {unknown})")
        if "transfer" in names and not surrogate:
            raise ValueError("--attacks includes 'transfer', which needs --type1-surrogate or --type2-surrogate (or leave 'transfer' out of --attacks)")
        object.__setattr__(self, "attacks", ",".join(names))


def without_diversity(attacks: str | None, *, seeds: list[int]) -> str:
    """``--attacks`` for targets of several training seeds: the default leaves out the diversity analysis
    (one seed's, see ``examples/diversity.py``); ValueError naming ``--attacks`` when it was asked for."""
    if attacks is None:
        return ",".join(name for name in DEFAULT_ATTACKS if name not in ("diversity", "transfer"))
    if "diversity" in [name.strip() for name in attacks.split(",")]:
        raise ValueError(f"--attacks: 'diversity' analyses the targets of one --seed, but the RUN_DIRs have seeds {seeds}; run examples/diversity.py per run")
    return attacks


@dataclass(frozen=True, kw_only=True)
class AttackParameters:
    """epsilon sweep (Fig. 4)

    The paper protocol's parameters (eps, JSMA's gamma, C&W's c) and the sweep's epsilons.
    """

    fgsm_eps: tuple[float, ...] = _paper("fgsm", "eps", PIXELS)
    bim_eps: tuple[float, ...] = _paper("bim", "eps", PIXELS)
    pgd_eps: tuple[float, ...] = _paper("pgd", "eps", PIXELS)
    jsma_gamma: tuple[float, ...] = _paper("jsma", "gamma (the largest share of features changed)", PIXELS)
    cw_const: tuple[float, ...] = _paper("cw", "initial constant c", POSITIVE)
    sweep_linf: tuple[float, ...] = flag(
        tuple(PAPER_SWEEPS["linf"]), "L_inf epsilons", check=PIXELS, per_dataset={"digits": DIGITS_SWEEPS["linf"]},
        shown="the authors' 0.005 ... 0.64; digits: 0.025 ... 0.4", type=_floats, metavar="LIST",
    )  # fmt: skip
    sweep_l2: tuple[float, ...] = flag(
        tuple(PAPER_SWEEPS["l2"]), "L_2 epsilons", check=POSITIVE, per_dataset={"digits": DIGITS_SWEEPS["l2"]},
        shown="the authors' 0.1 ... 12.8; digits: 0.25 ... 4", type=_floats, metavar="LIST",
    )  # fmt: skip

    def values(self, attack: str) -> tuple[float, ...]:
        """The paper protocol's parameters of ``attack`` (its eps, JSMA's gamma, C&W's c)."""
        return getattr(self, {"fgsm": "fgsm_eps", "bim": "bim_eps", "pgd": "pgd_eps", "jsma": "jsma_gamma", "cw": "cw_const"}[attack])


@dataclass(frozen=True, kw_only=True)
class EvaluationConfig:
    """Every setting of an evaluation, resolved for the targets' data set (``settings.from_flags(EvaluationConfig, flags, dataset=...)``)."""

    run: EvaluationRun
    parameters: AttackParameters
    settings: AttackSettings


class Target(NamedTuple):
    """One attacked ensemble."""

    method: str
    """The training method (a key of ``METHODS``)."""
    run_dir: Path
    members: nn.ModuleList


class Targets(NamedTuple):
    """The ensembles of the run directories by training seed, labelled by method, and each seed's training flags (one run's)."""

    ensembles: dict[int, dict[str, Target]]
    train_flags: dict[int, dict[str, Any]]

    @property
    def dataset(self) -> str:
        return next(iter(self.train_flags.values()))["dataset"]


def load_targets(run_dirs: list[Path], *, dataset: str | None, surrogates: list[tuple[str, Path | None]], methods: str | None = None) -> Targets:
    """Every run's ensembles, grouped by the run's ``--seed`` and labelled by method (PDD methods trained with
    ``--pdd-scaling authors``: ``AUTHORS_SCALING`` appended); ValueError naming the flag for a run that is
    missing, unfinished or of another data set (than ``dataset`` or the first run's).

    Runs of several seeds are the repeated trainings that the report averages; each seed is
    attacked on its own test split. ``surrogates``: ``(flag, run_dir)`` pairs whose runs must
    exist and share the data set and the seed (a surrogate of another seed was trained on
    another split, which may hold the targets' test images); they need targets of one seed.
    ``methods``: the comma-separated labels to keep (``--methods``), or None for all.
    """
    ensembles: dict[int, dict[str, Target]] = {}
    flags_by_seed: dict[int, dict[str, Any]] = {}
    for run_dir in run_dirs:
        train_flags = _checked_run(run_dir, "RUN_DIR", dataset)
        first = next(iter(flags_by_seed.values()), train_flags)
        if train_flags["dataset"] != first["dataset"]:
            raise ValueError(
                f"Expected every RUN_DIR to share the data set, but {str(run_dir)!r} has {train_flags['dataset']!r} and the first has {first['dataset']!r}"
            )
        seed = train_flags["seed"]
        flags_by_seed.setdefault(seed, train_flags)
        targets = ensembles.setdefault(seed, {})
        for method, members in checked_ensembles(run_dir, "RUN_DIR").items():
            label = method + (AUTHORS_SCALING if METHODS[method].pdd and train_flags["pdd_scaling"] == "authors" else "")
            if label in targets:
                label = f"{label}@{run_dir.name}"
            targets[label] = Target(method, run_dir, members)
    if methods is not None:
        wanted = [label.strip() for label in methods.split(",") if label.strip()]
        found = {label for targets in ensembles.values() for label in targets}
        if not wanted or set(wanted) - found:
            raise ValueError(f"Expected --methods to name targets of the RUN_DIRs, {sorted(found)}, but got {methods!r}")
        ensembles = {seed: {label: target for label, target in targets.items() if label in wanted} for seed, targets in ensembles.items()}
    for name, run_dir in surrogates:
        if run_dir is None:
            continue
        if len(ensembles) > 1:
            raise ValueError(f"{name} needs targets of one --seed (a surrogate is trained on one seed's split), but the RUN_DIRs have seeds {sorted(ensembles)}")
        surrogate_flags = _checked_run(run_dir, name, next(iter(flags_by_seed.values()))["dataset"])
        if surrogate_flags["seed"] not in ensembles:
            raise ValueError(f"Expected {name} {str(run_dir)!r} to be trained with the targets' --seed {sorted(ensembles)}, but it has seed {surrogate_flags['seed']}")
    return Targets(ensembles, flags_by_seed)


def _checked_run(run_dir: Path, name: str, dataset: str | None) -> dict[str, Any]:
    try:
        train_flags = run_flags(run_dir)
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None
    if dataset is not None and train_flags["dataset"] != dataset:
        raise ValueError(f"Expected {name} {str(run_dir)!r} to be trained on --dataset {dataset!r}, but it was trained on {train_flags['dataset']!r}")
    return train_flags


def checked_ensembles(run_dir: Path, name: str) -> dict[str, nn.ModuleList]:
    """:func:`load_trained_ensembles`, its error prefixed with the flag that named ``run_dir``."""
    try:
        return load_trained_ensembles(run_dir)
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None


def open_out_dir(config: EvaluationConfig, run_dirs: list[Path], argv: list[str]) -> Path:
    """The evaluation directory: a new one with ``config.json``, or an earlier one whose results-defining flags match.

    Raises ValueError naming ``--out-dir`` when it holds an evaluation with other flags, or other files.
    """
    out_dir = config.run.out_dir or Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-evaluate"
    stored = {"run_dirs": [str(path) for path in run_dirs], **as_flags(config), "out_dir": str(out_dir)}
    if (out_dir / CONFIG).exists():
        earlier = load_json(out_dir / CONFIG)
        differing = [key for key in stored if key not in NEUTRAL_FLAGS and earlier["flags"].get(key) != stored[key]]
        if differing:
            detail = "; ".join(f"--{key.replace('_', '-')} is {earlier['flags'].get(key)!r} there, {stored[key]!r} here" for key in differing)
            raise ValueError(f"--out-dir: {str(out_dir)!r} holds an evaluation with other flags ({detail}); pick another --out-dir")
        earlier["sessions"].append({"argv": argv, "versions": versions()})
        save_json(out_dir / CONFIG, earlier)
        return out_dir
    try:
        create_run_dir(out_dir)
    except ValueError as error:
        raise ValueError(f"--out-dir: {error}") from None
    save_json(out_dir / CONFIG, {"flags": stored, "argv": argv, "versions": versions(), "sessions": []})
    return out_dir


def versions() -> dict[str, str]:
    """:func:`~huang2021.run_dir.library_versions` plus the attack and plotting libraries."""
    import art
    import matplotlib

    return {**library_versions(), "adversarial-robustness-toolbox": art.__version__, "matplotlib": matplotlib.__version__}


def evaluate_robustness(config: EvaluationConfig, targets: Targets, out_dir: Path) -> None:
    """Run every attack of ``config`` not yet in ``out_dir`` on the targets of every seed, then write the report (also after a failed attack)."""
    seeds = sorted(targets.ensembles)
    labels = list(dict.fromkeys(label for group in targets.ensembles.values() for label in group))
    print(f"evaluation directory: {out_dir}; training seeds {seeds}; targets: {labels}; {config.run.limit or 'all'} test images per seed")
    threads = torch.get_num_threads()
    if config.run.threads is not None:
        torch.set_num_threads(config.run.threads)
    store = ResultStore(out_dir)
    try:
        try:
            for seed in seeds:
                RobustnessEvaluation(config, targets.ensembles[seed], targets.train_flags[seed], store).run()
        finally:
            write_report(out_dir, store.results, load_json(out_dir / CONFIG))
    except KeyboardInterrupt:
        print(f"\ninterrupted; finished attacks are in {out_dir}; rerun the same command to continue")
        raise SystemExit(130) from None
    finally:
        torch.set_num_threads(threads)
    print(f"report: {out_dir / REPORT}")


class RobustnessEvaluation:
    """The attacks on the targets of one training seed: its test images, the targets' clean predictions, the results store."""

    def __init__(self, config: EvaluationConfig, targets: dict[str, Target], train_flags: dict[str, Any], store: ResultStore) -> None:
        self.config = config
        self.settings = config.settings
        self.device = torch.device(config.run.device)
        self.train_seed: int = train_flags["seed"]
        self.targets = {label: target._replace(members=target.members.to(self.device)) for label, target in targets.items()}
        test = load_test_split(train_flags, self.device)
        limit = config.run.limit
        self.images, self.labels = test.images[:limit], test.labels[:limit]
        self.clean = {label: self._correct(target.members, self.images) for label, target in self.targets.items()}
        self.store = store
        for label, correct in self.clean.items():
            key = self._key("clean", "none", "-", 0.0, label)
            if key not in self.store:
                self.store.add(robust_result(correct, correct, key=key, protocol="clean", attack="none", norm="-", parameter="-", value=0.0, method=label, train_seed=self.train_seed, run_dir=str(self.targets[label].run_dir), surrogate=None, model_output="averaged probabilities", labels="-", seconds=0.0))
        self.attacks = config.run.attacks.split(",")

    def _key(self, protocol: str, attack: str, norm: str, value: float, label: str, surrogate: str | None = None) -> str:
        return result_key(protocol, attack, norm, value, label, surrogate, train_seed=self.train_seed)

    def _correct(self, members: nn.ModuleList, images: torch.Tensor) -> torch.Tensor:
        """``[N]`` bool on the CPU: the ensemble's prediction on ``images`` is the label."""
        return correct_on(Ensemble(members), Split(images, self.labels), 256).cpu()

    def run(self) -> None:
        parameters = self.config.parameters
        for attack in PAPER_ATTACKS:
            if attack in self.attacks:
                norm = "0" if attack == "jsma" else "2" if attack == "cw" else "inf"
                for value in parameters.values(attack):
                    self._white_box("paper", attack, norm, value)
        strong = [attack for attack in STRONG_ATTACKS if attack in self.attacks]
        for value in self._strong_epsilons() if strong else []:
            for label in self.targets:
                for index, attack in enumerate(strong):
                    self._strong(attack, value, label, earlier=strong[:index])
        if "transfer" in self.attacks:
            self._transfer()
        for sweep in SWEEPS:
            if sweep in self.attacks:
                for norm, values in (("inf", parameters.sweep_linf), ("2", parameters.sweep_l2)):
                    for value in values:
                        if sweep == "sweep":
                            self._white_box("paper", "pgd", norm, value)
                        else:
                            for label in self.targets:
                                self._strong("pgd-strong", value, label, earlier=[], norm=norm)
        if "diversity" in self.attacks:
            self._diversity()

    def _diversity(self) -> None:
        """Table 1 and Figs. 1-3 on the evaluated test images, into ``diversity/`` (skipped when done)."""
        out = self.store.out_dir / DIVERSITY_DIR
        if (out / DIVERSITY_MARKDOWN).exists():
            return
        members = {label: target.members for label, target in self.targets.items()}
        diversity_section(members, Split(self.images, self.labels), out, batch_size=self.settings.batch_size, markdown_dir=self.store.out_dir)

    def _strong_epsilons(self) -> list[float]:
        """The L_inf epsilons of the paper protocol's FGSM, BIM and PGD."""
        parameters = self.config.parameters
        return sorted(set(parameters.fgsm_eps) | set(parameters.bim_eps) | set(parameters.pgd_eps))

    def _white_box(self, protocol: str, attack: str, norm: str, value: float) -> None:
        """A paper-protocol attack through ART: averaged probabilities, the model's own predictions as labels."""
        for label, target in self.targets.items():
            key = self._key(protocol, attack, norm, value, label)
            if key in self.store:
                continue
            start = time.perf_counter()
            adversarial = self._craft(key, attack, value, target.members, norm, self.images, None)
            self._record(key, label, adversarial, start, protocol=protocol, attack=attack, norm=norm, value=value, output="probabilities", true_labels=False, surrogate=None)

    def _strong(self, attack: str, value: float, label: str, *, earlier: list[str], norm: str = "inf") -> None:
        """One strong attack, with the true labels, on the images that survived the ``earlier`` strong attacks at ``value``.

        The result's mask is the worst case so far: an image counts as robust only when it
        survived every earlier attack too. PGD and MORA are plain torch (:mod:`.ensemble_pgd`), APGD
        the library's (:meth:`_library_apgd`), AutoAttack is ART's on the log of the averaged
        probabilities (the ensemble's decision).
        """
        key = self._key("strong", attack, norm, value, label)
        if key in self.store:
            return
        target = self.targets[label]
        survivors = self.clean[label].clone()
        for name in earlier:
            survivors &= torch.from_numpy(self.store.robust_mask(self._key("strong", name, norm, value, label)))
        index = survivors.nonzero().squeeze(1).to(self.device)
        start = time.perf_counter()
        adversarial = self.images.clone()
        if len(index):
            if attack in STRONG_OBJECTIVES:
                adversarial[index] = self._plain_pgd(key, target.members, index, value, norm, STRONG_OBJECTIVES[attack])
            elif attack in LIBRARY_APGD:
                adversarial[index] = self._library_apgd(key, attack, target.members, index, value, norm)
            else:
                adversarial[index] = self._craft(key, attack, value, target.members, norm, self.images[index], self.labels[index])
        output = STRONG_OUTPUTS[attack]
        self._record(
            key, label, adversarial, start, protocol="strong", attack=attack, norm=norm, value=value, output=output,
            true_labels=True, surrogate=None, survivors=survivors, survivors_of=earlier,
        )  # fmt: skip

    def _plain_pgd(self, key: str, members: nn.ModuleList, index: torch.Tensor, eps: float, norm: str, objective: Objective) -> torch.Tensor:
        """:func:`~.ensemble_pgd.ensemble_pgd` on the images ``index``, batch by batch, from a seed of its own."""
        generator = torch.Generator(device=self.device).manual_seed(self._seed(key))
        losses = attack_losses(objective, self.settings.strong_restarts)
        images, labels = self.images[index], self.labels[index]
        parts = []
        for batch in batch_progress(key, len(images), self.settings.batch_size):
            parts.append(ensemble_pgd(members, images[batch], labels[batch], eps, steps=self.settings.strong_steps, losses=losses, norm=norm, generator=generator))
        return torch.cat(parts)

    def _library_apgd(self, key: str, attack: str, members: nn.ModuleList, index: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
        """The library's APGD (``attack``: ``"apgd-ce"`` or ``"apgd-dlr"``) on the images ``index``, batch by batch.

        :func:`ensemble_diversity.attacks.evaluate_robustness` with the one attack, ``--strong-restarts``
        runs of ``--strong-steps`` steps, each on the images the earlier runs failed on, judged by
        the ensemble's averaged probabilities; each batch from a seed of its own, so a resumed
        evaluation draws the same random starts.
        """
        images, labels = self.images[index], self.labels[index]
        parts = []
        for batch in batch_progress(key, len(images), self.settings.batch_size):
            result = library.evaluate_robustness(
                members, images[batch], labels[batch], eps=eps, attacks=[attack], norm=norm, steps=self.settings.strong_steps,
                restarts=self.settings.strong_restarts, batch_size=self.settings.batch_size, seed=self._seed(f"{key}#{batch.start}"),
                keep_adversarial=True,
            )  # fmt: skip
            parts.append(result.adversarial[0])
        return torch.cat(parts)

    def _transfer(self) -> None:
        """Table 4: craft on a surrogate with the paper protocol, measure on every target."""
        kinds = (("transfer-I", "--type1-surrogate", self.config.run.type1_surrogate), ("transfer-II", "--type2-surrogate", self.config.run.type2_surrogate))
        for protocol, name, run_dir in kinds:
            if run_dir is None:
                continue
            surrogates = checked_ensembles(run_dir, name)
            for attack in TRANSFER_ATTACKS:
                norm = "0" if attack == "jsma" else "inf"
                for value in self.config.parameters.values(attack):
                    self._transfer_attack(protocol, run_dir, surrogates, attack, norm, value)

    def _transfer_attack(self, protocol: str, run_dir: Path, surrogates: dict[str, nn.ModuleList], attack: str, norm: str, value: float) -> None:
        crafted: dict[str, torch.Tensor] = {}
        for label, target in self.targets.items():
            # Type I: always the surrogate run's baseline; Type II: its ensemble of the target's own method.
            source = "baseline" if protocol == "transfer-I" else target.method
            if source not in surrogates:
                continue
            surrogate = f"{run_dir.name}:{source}"
            key = self._key(protocol, attack, norm, value, label, surrogate)
            if key in self.store:
                continue
            start = time.perf_counter()
            if source not in crafted:
                crafted[source] = self._craft(key, attack, value, surrogates[source].to(self.device), norm, self.images, None)
            self._record(key, label, crafted[source], start, protocol=protocol, attack=attack, norm=norm, value=value, output="probabilities", true_labels=False, surrogate=surrogate)

    def _seed(self, key: str) -> int:
        """A seed per result, so a resumed evaluation draws the same random starts as an uninterrupted one."""
        return (zlib.crc32(key.encode()) ^ self.config.run.seed) % 2**32

    def _craft(self, key: str, attack: str, value: float, members: nn.ModuleList, norm: str, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """ART's adversarial images for ``images`` against ``members``' ensemble, batch by batch under a progress bar, on the device; ``labels`` None: the model's predictions."""
        seed = self._seed(key)
        np.random.seed(seed)
        torch.manual_seed(seed)
        x = images.cpu().numpy()
        y = None if labels is None else labels.cpu().numpy()
        parts = []
        for batch in batch_progress(key, len(x), self.settings.batch_size):
            parts.append(craft(attack, value, members, x[batch], None if y is None else y[batch], self.settings, norm=_art_norm(norm), device=self.device))
        return torch.from_numpy(np.concatenate(parts)).to(self.device)

    def _record(
        self, key: str, label: str, adversarial: torch.Tensor, start: float, *, protocol: str, attack: str, norm: str, value: float,
        output: str, true_labels: bool, surrogate: str | None, survivors: torch.Tensor | None = None, survivors_of: list[str] | None = None,
    ) -> None:  # fmt: skip
        """Score ``adversarial`` ``[N, C, H, W]`` and store the result; ``survivors`` ``[N]``: the images the attack was run on (the rest count as broken)."""
        target = self.targets[label]
        adversarial_correct = self._correct(target.members, adversarial)
        if survivors is not None:
            adversarial_correct &= survivors
        extra = {} if survivors_of is None else {"survivors_of": survivors_of}
        result = robust_result(
            self.clean[label],
            adversarial_correct,
            key=key,
            protocol=protocol,
            attack=attack,
            norm=norm,
            parameter=PARAMETER[attack],
            value=value,
            method=label,
            train_seed=self.train_seed,
            run_dir=str(target.run_dir),
            surrogate=surrogate,
            model_output=f"averaged {output}" if output in ("logits", "probabilities") else output,
            labels="true labels" if true_labels else "model predictions",
            seconds=time.perf_counter() - start,
            settings=self.settings.as_dict(),
            seed=self.config.run.seed,
            **extra,
        )
        self.store.add(result)


def _art_norm(norm: str) -> float:
    return np.inf if norm in ("inf", "0") else float(norm)

