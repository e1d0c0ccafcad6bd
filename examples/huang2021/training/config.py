"""Every setting of ``examples/train.py``: one dataclass per section of its ``--help``, one field per flag.

:class:`TrainingConfig` is what a run trains with, stored resolved in its ``config.json``
(``--arch``, ``--width``, ``--epochs`` and ``--val-fraction`` filled in from the data set and
architecture); :class:`Session` steers one session of a run and is not stored. The defaults are
the authors' recipe (github.com/ALIS-Lab/AAAI2021-PDD) and the paper's settings; the sources of
each are in examples/README.md.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import ClassVar, Literal

import torch

from ..data.splits import DATASETS
from ..members import ARCHITECTURES, DEFAULT_WIDTH
from ..settings import AT_LEAST_ONE, Check, device_flag, flag
from .methods import METHODS, parse_methods

KEEP_RATE = Check(lambda value: 0.0 <= value <= 1.0, "in [0, 1] (a keep rate of eq. 2)")


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """run"""

    methods: str = flag("baseline,pdd+deg", f"comma-separated, from {list(METHODS)}")
    dataset: str = flag("digits", "digits is embedded in scikit-learn; the others are read from --data-root", choices=list(DATASETS))
    data_root: Path = flag(Path("data"), "folder holding FashionMNIST/, cifar-100-python/ or tiny-imagenet-200/", metavar="DIR")
    val_fraction: float = flag(
        MISSING,
        "share held out for validation (model selection): of the official training split; digits: of the whole set (as much again is its test split)",
        per_dataset={name: spec.val_fraction for name, spec in DATASETS.items()},
        type=float,
    )
    arch: str = flag("resnet18", "member architecture", per_dataset={"digits": "cnn"}, choices=ARCHITECTURES)
    members: int = flag(3, "ensemble size K", check=Check(lambda value: value >= 2, "an integer >= 2 (an ensemble)"))
    width: int = flag(
        None,
        "cnn: units of the penultimate layer, where PDD acts; resnet*/vgg16: base width, 64 = the real one, PDD on 8 * width units",
        check=AT_LEAST_ONE,
        shown=", ".join(f"{arch} {width}" for arch, width in DEFAULT_WIDTH.items()),
        type=int,
    )
    seed: int = flag(0, "data split, initial weights, batch order, dropout masks")
    device: str = device_flag("where the members train")
    run_dir: Path | None = flag(None, "a new or empty directory for the run's files", shown="runs/<timestamp>-<methods>", type=Path)
    max_batches: int | None = flag(None, "train on at most N batches per epoch, for smoke tests", check=AT_LEAST_ONE, shown="all", type=int, metavar="N")
    eval_batch_size: int = flag(500, "images per forward in validation and test evaluation", check=AT_LEAST_ONE)
    threads: int = flag(
        None,
        "torch intra-op threads the run trains with (stored, and set again on --resume: a bit-identical rerun needs the same count)",
        check=AT_LEAST_ONE,
        shown="this process's, torch.get_num_threads()",
        type=int,
        metavar="N",
    )

    def __post_init__(self) -> None:
        parse_methods(self.methods)
        limit = 0.5 if self.dataset == "digits" else 1.0
        if self.val_fraction is not None and not 0.0 < self.val_fraction < limit:
            shown = "0.5 (digits: as much again is its test split)" if self.dataset == "digits" else "1"
            raise ValueError(f"Expected --val-fraction to be in (0, {shown}), but got {self.val_fraction}")
        if self.width is None:
            object.__setattr__(self, "width", DEFAULT_WIDTH[self.arch])
        if self.threads is None:
            object.__setattr__(self, "threads", torch.get_num_threads())


@dataclass(frozen=True, kw_only=True)
class Session:
    """session (steers this session only, not stored with the run)"""

    resume: Path | None = flag(None, "continue that run from its last completed epoch, with its stored flags", type=Path, metavar="RUN_DIR")
    stop_after_epochs: int | None = flag(
        None, "stop this session after N epochs (all methods together); continue with --resume", check=AT_LEAST_ONE, type=int, metavar="N"
    )
    download: bool = flag(
        False, "fetch Fashion-MNIST or CIFAR-100 into --data-root with torchvision if missing (Tiny-ImageNet: manual download)", action="store_true"
    )


@dataclass(frozen=True, kw_only=True)
class Optimisation:
    """optimisation (the authors' recipe, SGD)"""

    epochs: int = flag(
        MISSING, "epochs (the authors' per data set; digits: chosen here)", check=AT_LEAST_ONE,
        per_dataset={name: spec.epochs for name, spec in DATASETS.items()}, type=int,
    )  # fmt: skip
    batch_size: int = flag(64, "images per training step", check=AT_LEAST_ONE)
    lr: float = flag(0.02, "learning rate, cosine-annealed per epoch")
    min_lr: float = flag(1e-4, "learning rate the cosine reaches at the end")
    momentum: float = flag(0.9, "SGD momentum")
    weight_decay: float = flag(5e-4, "SGD weight decay")
    deg_every: int = flag(1, "compute the DEG/GAL penalty on every N-th step only, a cheaper setting (1: every step)", check=AT_LEAST_ONE, metavar="N")
    amp: Literal["none", "bf16"] = flag("none", "autocast the training forward passes and losses to bfloat16, CPU or CUDA", choices=("none", "bf16"))


@dataclass(frozen=True, kw_only=True)
class PDDSettings:
    """PDD (Algorithm 1, eq. 2)"""

    alpha: float = flag(0.9, "PDD keep rate in a member's priority interval, eq. 2", check=KEEP_RATE)
    beta: float = flag(0.1, "PDD keep-rate scale outside it, eq. 2", check=KEEP_RATE)
    pdd_scaling: Literal["inverted", "authors"] = flag(
        "inverted",
        "inverted: kept units divided by their keep rate, so test time (PDD off) sees the training scale (the library's default); "
        "authors: no rescaling, the authors' code and the paper's tables",
        choices=("inverted", "authors"),
    )
    pdd_statistics: Literal["sample", "batch"] = flag(
        "sample", "PDD's range and histogram per sample (the authors' code) or per batch, all-reduced over ranks under torchrun", choices=("sample", "batch")
    )
    num_intervals: int | None = flag(None, "PDD intervals M > K", shown="the library's, M=10 for K=3", type=int)


@dataclass(frozen=True, kw_only=True)
class Weights:
    """loss terms (eq. 1 and the regularisers' weights): how the objective combines them"""

    ce_reduction: Literal["auto", "mean", "sum"] = flag(
        "auto",
        "members' CE terms in eq. 1: auto = sum for adp (Pang et al.'s code, which tuned its weights), mean for the others "
        "(the PDD/DEG authors' code); mean or sum = that for every method",
        choices=("auto", "mean", "sum"),
    )
    deg_lambda: float = flag(0.01, "DEG weight lambda, eq. 4")
    deg_fraction: float = flag(
        1.0,
        "compute the DEG/GAL penalty on the first ceil(F x B) images of each batch only, a cheaper setting; "
        "the others take a plain forward, the CE covers the whole batch (1: the whole batch)",
        check=Check(lambda value: 0.0 < value <= 1.0, "in (0, 1] (a share of the batch)"),
        group=(Optimisation.__doc__ or "").strip(),
        metavar="F",
    )  # a Weights field (the objective reads it), listed in --help beside --deg-every
    gal_lambda: float = flag(0.5, "GAL weight (DVERGE's re-implementation of GAL)")
    adp_alpha: float = flag(2.0, "ADP ensemble-entropy weight")
    adp_beta: float = flag(0.5, "ADP log-det weight")


@dataclass(frozen=True, kw_only=True)
class AdversarialTraining:
    """adversarial training (the advt-* methods, Table 6)

    How the ``advt-*`` methods craft and weigh their examples; the defaults are ADP's adversarial
    training (``adversarial.py`` has the sources).
    """

    flag_prefix: ClassVar[str] = "advt_"

    eps: tuple[float, ...] = flag(
        (0.01, 0.05),
        "L_inf bound in [0, 1]: one value fixes it, two (LOW HIGH) draw it per batch uniformly (ADP's AdvT)",
        check=Check(lambda eps: 1 <= len(eps) <= 2 and all(0.0 <= value <= 1.0 for value in eps) and eps[0] <= eps[-1], "one value or LOW <= HIGH, in [0, 1]"),
        nargs="+",
        metavar="EPS",
    )
    steps: int = flag(10, "PGD iterations (FGSM takes one step of size eps)", check=AT_LEAST_ONE)
    step_size: float | None = flag(None, "PGD step", check=Check(lambda value: value > 0, "> 0"), shown="eps / 10 of each batch", type=float)
    random_start: bool = flag(True, "PGD starts at a uniform point of the eps-ball", action=argparse.BooleanOptionalAction)
    weight: float = flag(
        0.5, "w in (1 - w) loss(clean) + w loss(adversarial); 1 trains on adversarial examples only", check=Check(lambda value: 0.0 < value <= 1.0, "in (0, 1]")
    )
    labels: Literal["predicted", "true"] = flag("predicted", "labels the attack moves away from: the ensemble's predictions or the true ones", choices=("predicted", "true"))
    craft_mode: Literal["train", "eval"] = flag("train", "members' and PDD's mode while crafting; eval attacks the deployed ensemble (no PDD)", choices=("train", "eval"))


ROBUST_EPS = {"digits": (0.05, 0.1), "fashion-mnist": (0.01, 0.02), "cifar100": (0.01, 0.02), "tiny-imagenet": (0.01, 0.02)}
"""The robustness column's epsilons: the paper protocol's PGD epsilons of each data set (Table 2; digits: docs/evaluation.md)."""


@dataclass(frozen=True, kw_only=True)
class RobustnessColumn:
    """robustness column (the comparison table's white-box attack: L_inf PGD on the averaged logits, true labels, plain torch)"""

    robust_eps: tuple[float, ...] = flag(
        MISSING,
        "L_inf epsilons of the column's PGD, on all test images; give the flag with no value to leave the column out",
        check=Check(lambda eps: all(0.0 < value <= 1.0 for value in eps), "values in (0, 1] (pixels lie in [0, 1])"),
        per_dataset=ROBUST_EPS,
        type=float,
        nargs="*",
        metavar="EPS",
    )
    robust_steps: int = flag(50, "PGD steps, each of 2.5 eps / steps", check=AT_LEAST_ONE)
    robust_restarts: int = flag(1, "PGD random starts (a restart attacks only the images not yet broken)", check=AT_LEAST_ONE)


def _official_at_batch_64(weight: float) -> float:
    """TRS's smoothness weight for ``--batch-size 64`` from the official one at batch 128: the term scales as 1/B^2 (docs/method.md)."""
    return weight * (64 / 128) ** 2


@dataclass(frozen=True, kw_only=True)
class PeerSettings:
    """peers (the trs and dverge methods; defaults: their official code's, digits scaled as docs/method.md says)"""

    trs_similarity: float = flag(
        MISSING,
        "weight of TRS's gradient-similarity term, scale x coeff of the official code",
        per_dataset={"digits": 10.0, "fashion-mnist": 10.0, "cifar100": 40.0, "tiny-imagenet": 40.0},
        check=Check(lambda value: value >= 0, ">= 0"),
        type=float,
    )
    trs_smoothness: float = flag(
        MISSING,
        "weight of TRS's smoothness term, scale x lamda of the official code at batch 128, times (64 / 128)^2 for --batch-size 64",
        per_dataset={
            "digits": _official_at_batch_64(10.0),
            "fashion-mnist": _official_at_batch_64(10.0),
            "cifar100": _official_at_batch_64(2.5),
            "tiny-imagenet": _official_at_batch_64(2.5),
        },
        check=Check(lambda value: value >= 0, ">= 0"),
        type=float,
    )
    trs_eps: tuple[float, ...] = flag(
        MISSING,
        "L_inf radius of TRS's smoothing PGD, INIT END: linear in the epoch from INIT, (END - INIT) x (epoch - 1) / epochs above it",
        per_dataset={"digits": (0.05, 0.1), "fashion-mnist": (0.1, 0.2), "cifar100": (0.01, 0.03), "tiny-imagenet": (0.01, 0.03)},
        check=Check(lambda eps: len(eps) == 2 and 0.0 <= eps[0] <= eps[1] <= 1.0, "INIT END with 0 <= INIT <= END <= 1"),
        type=float,
        nargs=2,
        metavar="EPS",
    )
    trs_steps: int = flag(6, "PGD steps of TRS's smoothing point, each of eps / 3", check=AT_LEAST_ONE)
    dverge_eps: float = flag(
        MISSING,
        "L_inf radius of DVERGE's feature distillation",
        per_dataset={"digits": 0.1, "fashion-mnist": 0.35, "cifar100": 0.07, "tiny-imagenet": 0.07},
        check=Check(lambda value: 0.0 < value <= 1.0, "in (0, 1]"),
        type=float,
    )
    dverge_steps: int = flag(10, "distillation steps, each of --dverge-eps / 10", check=AT_LEAST_ONE)
    dverge_layer: str = flag(
        "features",
        "where DVERGE distils: features (the head's input), random (drawn per epoch among every BatchNorm, the features "
        "and the logits, as the official code draws among its layers) or a submodule path of the members",
    )
    dverge_start: Literal["baseline", "scratch"] = flag(
        "baseline",
        "baseline: start from this run's trained baseline members when --methods trains baseline before dverge (the official recipe); scratch: from the initial members",
        choices=("baseline", "scratch"),
    )


@dataclass(frozen=True, kw_only=True)
class TrainingConfig:
    """What a run trains with: every stored flag, resolved (``settings.from_flags(TrainingConfig, flags, dataset=...)``)."""

    run: RunSettings
    optimisation: Optimisation
    pdd: PDDSettings
    weights: Weights
    adversarial: AdversarialTraining
    peers: PeerSettings
    robustness: RobustnessColumn

    def __post_init__(self) -> None:
        intervals, members = self.pdd.num_intervals, self.run.members
        if intervals is not None and intervals <= members:
            raise ValueError(f"Expected --num-intervals to exceed --members (M > K), but got {intervals} and {members}")
