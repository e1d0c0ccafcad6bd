"""What each regulariser costs per training step, as a ratio to the baseline measured in the same run.

    PYTHONPATH=src:examples python benchmarks/train_step.py --small          # narrow members, 2 CPU cores, minutes
    PYTHONPATH=src:examples python benchmarks/train_step.py --device cuda --compile inductor  # ResNet-18 members, the issue's setting
    PYTHONPATH=src:examples python benchmarks/train_step.py --torchvision --threads 1   # what a user's loop costs, K=3, batch 32

``examples`` on ``PYTHONPATH``: the harness package ``huang2021`` (its members and objective).

One step is forward, loss, backward and SGD update of K ResNet-18 members (torchvision's blocks,
CIFAR stem, ``examples/huang2021/members/resnet.py``) on a batch of 64 images 3x32x32 with 100
classes, built by the training objective of ``examples/`` (``huang2021.training.objective``), so what is
timed is what the examples train. Steps timed:

- the methods: ``baseline`` (eq. 1), ``adp``, ``pdd``, ``deg``, ``pdd+deg``, ``gal``, and the
  peers ``trs`` (its smoothing PGD at the end of the official CIFAR ramp, eps 0.03) and
  ``dverge`` (10 distillation steps at the features, eps 0.07) with the CIFAR settings of
  :data:`PEERS`;
- cheaper or faster settings of DEG, with their effect on the penalty where one step shows it
  (``penalty_vs_deg``: the absolute difference of the first step's penalty from plain DEG's,
  same members, same batch, as a fraction of the penalty's range ``[-P, P]``, P = K(K-1)/2
  pairs; a relative difference would be meaningless, the penalty starting near 0):
  ``deg every N`` (the penalty on one step in N, ``--deg-every N`` of the examples, N = 4 by
  default; time per step averaged over the N), ``deg sub-batch F`` (the penalty on the first
  ``ceil(F * B)`` images of every batch, ``--deg-fraction F`` of the examples; one row per F
  of ``--deg-fraction``, 0.25 by default; timed when ``--methods`` names it), ``deg bf16`` (autocast to bfloat16), ``deg vmap`` and ``baseline vmap``
  (members run as one ``VectorizedMembers`` call per half);
- ``deg one pass per member``: the input gradients taken with one backward pass per member on
  a shared input, the path this library replaced with ``member_inputs`` (for the record);
- with ``--compile BACKEND``, also ``baseline compiled`` and ``pdd compiled``: each member's
  forward compiled in place (``nn.Module.compile``, the K members share one graph; PDD stays
  eager), its backward through the compiled backward graph. Only the steps without an input
  gradient: double backward through a compiled graph is not supported, so DEG and GAL cannot
  be compiled this way.

``--torchvision`` times instead the steps a user writes (:data:`USER_STEPS`), through the
public API only: K torchvision ``resnet18(num_classes=100)`` (ImageNet stem: a 32x32 image is
8x8 after it), K = 3 and a batch of 32 by default, ``baseline`` (the members' CE summed, the
members run as a list), ``pdd`` (``Ensemble(models, pdd=PriorityDiversifiedDropout(K))``'s
``member_logits``), ``deg`` (``deg_penalty(models, x, y)``), ``pdd+deg``
(``deg_penalty(ensemble, x, y)``), ``trs`` and ``dverge`` (the library's TRS and DVERGE
functions at the official CIFAR settings), each followed by an SGD step. Their rows also hold the last
penalty (``last_penalty``) and how many priority tallies PDD made (``priority_tallies``).

Steps are interleaved (every method once per round), warm-up rounds excluded, and the median
over rounds reported, with the quartiles over rounds of each round's time ratio to the
baseline's (``ratio_quartiles``), peak memory (CUDA: ``torch.cuda.max_memory_allocated``; CPU: the
bytes autograd saved for backward, the part of memory a regulariser adds). Prints a table of
ratios to the baseline and writes JSON with the machine, torch version and settings;
``--profile N`` adds each step's N costliest operators under ``torch.profiler``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from huang2021.members.resnet import ResNetMember
from huang2021.training.config import PeerSettings, Weights
from huang2021.training.distributed import EnsembleForward
from huang2021.training.methods import METHODS
from huang2021.training.objective import PeerStep, training_objective
from machine import machine
from torch import Tensor, nn

from ensemble_diversity import (
    Ensemble,
    PriorityDiversifiedDropout,
    VectorizedMembers,
    adp_regularizer,
    deg_penalty,
    dverge_loss,
    ensemble_cross_entropy,
    feature_distillation,
    gal_penalty,
    trs_perturbation,
    trs_terms,
)
from ensemble_diversity.deg import dispersed_gradient_loss, member_input_gradients, member_inputs

PAPER_METHODS = ("baseline", "adp", "pdd", "deg", "pdd+deg", "gal", "trs", "dverge")
"""The methods of the comparison: the paper's, GAL, and the peers TRS and DVERGE."""
FAST_PATHS = ("deg every N", "deg bf16", "baseline vmap", "deg vmap", "deg one pass per member")
COMPILED_PATHS = ("baseline compiled", "pdd compiled")
"""Timed with ``--compile BACKEND`` only (compilation takes about a minute)."""
WEIGHTS = Weights(ce_reduction="mean", deg_lambda=0.01, adp_alpha=2.0, adp_beta=0.5, gal_lambda=0.5)
NUM_CLASSES = 100
PEERS = PeerSettings(
    trs_similarity=40.0, trs_smoothness=0.625, trs_eps=(0.01, 0.03), trs_steps=6,
    dverge_eps=0.07, dverge_steps=10, dverge_layer="features", dverge_start="scratch",
)  # fmt: skip
"""The harness's CIFAR defaults (``examples/train.py --dataset cifar100``): the official CIFAR-10 settings."""
PEER_STEP = PeerStep(PEERS, trs_eps=PEERS.trs_eps[1], dverge_layer=None)
PENALTY_COMPARED = ("deg bf16", "deg vmap", "deg one pass per member")
"""Steps whose first penalty is compared with plain DEG's (``deg every N``'s first step is plain DEG; the
``deg sub-batch`` rows too, the difference being the sub-batch's sampling error)."""
SUB_BATCH = "deg sub-batch "
SUB_BATCH_PATHS = (SUB_BATCH + "F",)
"""Timed when ``--methods`` names ``deg sub-batch F``: one row ``deg sub-batch 0.25`` per fraction of ``--deg-fraction``."""
USER_STEPS = {
    "baseline": "sum(F.cross_entropy(model(x), y) for model in models).backward()",
    "pdd": "ensemble_cross_entropy(ens.member_logits(x), y, member_reduction='sum').backward()",
    "deg": "out = deg_penalty(models, x, y); (out.losses.mean() + 0.01 * out.penalty).backward()",
    "pdd+deg": "out = deg_penalty(ens, x, y); (out.losses.mean() + 0.01 * out.penalty).backward()",
    "pdd+deg 1/4 batch": "out = deg_penalty(ens, x, y, penalty_fraction=0.25); (out.losses.mean() + 0.01 * out.penalty).backward()",
    "adp": "z = torch.stack([model(x) for model in models]); (ensemble_cross_entropy(z, y, member_reduction='sum') + adp_regularizer(z, y).value).backward()",
    "gal": "out = gal_penalty(models, x, y); (out.losses.mean() + 0.5 * out.penalty).backward()",
    "trs": "t = trs_terms(models, x, y, x_smooth=trs_perturbation(models, x, y, eps=0.03)); "
    "(t.losses.sum() + 40 * t.similarity + 0.625 * t.smoothness).backward()",
    "dverge": "d = feature_distillation(models, x, x.roll(1, 0), eps=0.07, step_size=0.007); dverge_loss(models, d, y).losses.sum().backward()",
}
"""``--torchvision``: each step's loss as a user writes it, ``models`` K torchvision ``resnet18``,
``ens = Ensemble(models, pdd=PriorityDiversifiedDropout(K))``; an SGD step follows each."""


class Setting:
    """The members and batch of one K; every step function trains its own copy of the members."""

    def __init__(self, num_members: int, width: int, batch: int, device: torch.device) -> None:
        torch.manual_seed(0)
        self.num_members = num_members
        self.initial = nn.ModuleList(
            ResNetMember(18, in_channels=3, num_classes=NUM_CLASSES, width=width) for _ in range(num_members)
        ).to(device)
        self.images = torch.rand(batch, 3, 32, 32, device=device)
        self.labels = torch.randint(0, NUM_CLASSES, (batch,), device=device)

    def members(self) -> nn.ModuleList:
        return copy.deepcopy(self.initial).train()


def step_function(name: str, setting: Setting, deg_every: int = 4, compile_backend: str = "inductor") -> Callable[[], Tensor]:
    """A closure running one training step of ``name``; it returns the step's penalty (detached).

    ``compile_backend``: the ``torch.compile`` backend of the ``COMPILED_PATHS`` steps.
    """
    if name in ("baseline vmap", "deg vmap"):
        return _vectorized_step(setting, deg=name == "deg vmap")
    if name == "deg one pass per member":
        return _shared_input_deg_step(setting)
    weights = WEIGHTS
    if name.startswith(SUB_BATCH):
        weights, name = replace(WEIGHTS, deg_fraction=float(name.removeprefix(SUB_BATCH))), "deg"
    method_name = {"deg every N": "deg", "deg bf16": "deg"}.get(name, name.removesuffix(" compiled"))
    method = METHODS[method_name]
    members = setting.members()
    pdd = PriorityDiversifiedDropout(setting.num_members).to(setting.images.device) if method.pdd else None
    ensemble = Ensemble(members, pdd=pdd)
    model = EnsembleForward(ensemble)
    if name in COMPILED_PATHS:
        # The members as Ensemble split them (each runs up to its head): one graph for all K,
        # compiled at the first step (warm-up). Steps with DEG or GAL cannot be compiled this
        # way: double backward through a compiled graph is not supported.
        for member in ensemble.members:
            member.compile(backend=compile_backend)
    optimizer = torch.optim.SGD(members.parameters(), lr=0.01, momentum=0.9)
    autocast = (
        (lambda: torch.autocast(setting.images.device.type, dtype=torch.bfloat16)) if name == "deg bf16" else nullcontext
    )
    counter = [0]

    def step() -> Tensor:
        with_penalty = name != "deg every N" or counter[0] % deg_every == 0
        counter[0] += 1
        with autocast():
            objective = training_objective(
                method, model, setting.images, setting.labels, weights, with_penalty=with_penalty, peer=PEER_STEP
            )
        return sgd_update(optimizer, objective.loss, objective.penalty)

    return step


def sgd_update(optimizer: torch.optim.Optimizer, loss: Tensor, penalty: Tensor) -> Tensor:
    """The end of every timed step: backward and update; returns the step's penalty, detached."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return penalty.detach()


def _vectorized_step(setting: Setting, *, deg: bool) -> Callable[[], Tensor]:
    members = setting.members()
    features = VectorizedMembers([member.features for member in members])
    heads = VectorizedMembers([member.head for member in members])
    optimizer = torch.optim.SGD([*features.parameters(), *heads.parameters()], lr=0.01, momentum=0.9)

    def step() -> Tensor:
        inputs = member_inputs(setting.images, setting.num_members) if deg else setting.images
        logits = heads(features(inputs, per_member=deg), per_member=True)
        losses = ensemble_cross_entropy(logits, setting.labels, member_reduction="none")
        loss, penalty = losses.mean(), losses.new_zeros(())
        if deg:
            penalty = dispersed_gradient_loss(member_input_gradients(losses, inputs, per_member=True))
            loss = loss + WEIGHTS.deg_lambda * penalty
        return sgd_update(optimizer, loss, penalty)

    return step


def _shared_input_deg_step(setting: Setting) -> Callable[[], Tensor]:
    members = setting.members()
    optimizer = torch.optim.SGD(members.parameters(), lr=0.01, momentum=0.9)

    def step() -> Tensor:
        inputs = setting.images.detach().requires_grad_(True)
        logits = torch.stack([member(inputs) for member in members])
        losses = ensemble_cross_entropy(logits, setting.labels, member_reduction="none")
        penalty = dispersed_gradient_loss(member_input_gradients(losses, inputs))
        loss = losses.mean() + WEIGHTS.deg_lambda * penalty
        return sgd_update(optimizer, loss, penalty)

    return step


def first_step_penalty(name: str, setting: Setting) -> float:
    """The penalty of the first step from the shared initial members (for ``penalty_vs_deg``)."""
    torch.manual_seed(1)
    return float(step_function(name, setting)())


def timed(step: Callable[[], Tensor], device: torch.device, calls: int) -> tuple[float, int]:
    """Seconds per step over ``calls`` consecutive steps, and the peak memory in bytes (see module doc)."""
    saved = [0]

    def pack(tensor: Tensor) -> Tensor:
        saved[0] += tensor.numel() * tensor.element_size()
        return tensor

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor) if device.type == "cpu" else nullcontext()
    with hooks:
        for _ in range(calls):
            step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return (time.perf_counter() - start) / calls, torch.cuda.max_memory_allocated(device)
    return (time.perf_counter() - start) / calls, saved[0] // calls


def measure(
    names: list[str],
    setting: Setting,
    *,
    rounds: int,
    warmup: int,
    device: torch.device,
    deg_every: int,
    profile: int = 0,
    compile_backend: str = "inductor",
) -> dict[str, Any]:
    steps = {name: step_function(name, setting, deg_every, compile_backend) for name in names}
    # "deg every N" is timed over whole cycles of N steps; the others one step at a time.
    calls = {name: deg_every if name == "deg every N" else 1 for name in names}
    rows = interleaved_rows(steps, calls, rounds=rounds, warmup=warmup, device=device, profile=profile)
    if "deg" in names:
        deg_penalty_value = first_step_penalty("deg", setting)
        pairs = setting.num_members * (setting.num_members - 1) / 2
        for name in (*PENALTY_COMPARED, *(name for name in rows if name.startswith(SUB_BATCH))):
            if name in rows:
                value = first_step_penalty(name, setting)
                rows[name]["first_step_penalty"] = value
                rows[name]["penalty_vs_deg"] = abs(value - deg_penalty_value) / (2 * pairs)
        rows["deg"]["first_step_penalty"] = deg_penalty_value
    return rows


def interleaved_rows(
    steps: dict[str, Callable[[], Tensor]],
    calls: dict[str, int],
    *,
    rounds: int,
    warmup: int,
    device: torch.device,
    profile: int = 0,
) -> dict[str, dict[str, Any]]:
    """Time ``steps`` (``"baseline"`` among them) in interleaved rounds; one row of times and ratios per step.

    ``ratio_quartiles``: quartiles over rounds of the step's time divided by the baseline's in
    the same round, the spread of the ratio (a round's steps share whatever load the machine had).
    ``profile``: after the timing, the ``profile`` operators with the most self time in one more
    step under ``torch.profiler`` (row ``profile``; 0: none).
    """
    for _ in range(warmup):
        for name, step in steps.items():
            timed(step, device, calls[name])
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    memory: dict[str, int] = {}
    for _ in range(rounds):  # interleaved, so drift (other load, clocks) affects all alike
        for name, step in steps.items():
            elapsed, peak = timed(step, device, calls[name])
            seconds[name].append(elapsed)
            memory[name] = max(memory.get(name, 0), peak)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    rows = {}
    for name, values in seconds.items():
        ratios = [value / baseline for value, baseline in zip(values, seconds["baseline"])]
        rows[name] = {
            "seconds_per_step": medians[name],
            "ratio_to_baseline": medians[name] / medians["baseline"],
            "ratio_quartiles": statistics.quantiles(ratios, n=4, method="inclusive") if rounds > 1 else ratios * 3,
            "all_seconds": values,
            "peak_memory_bytes": memory[name],
            "memory_ratio_to_baseline": memory[name] / max(memory["baseline"], 1),
        }
        if profile:
            rows[name]["profile"] = top_operators(steps[name], calls[name], profile, device)
    return rows


def top_operators(step: Callable[[], Tensor], calls: int, count: int, device: torch.device) -> list[dict[str, Any]]:
    """The ``count`` operators with the most self time (CPU time; on CUDA, kernel time) over ``calls`` steps."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        for _ in range(calls):
            step()
    events = profiler.key_averages()
    own = {event.key: event.self_device_time_total if device.type == "cuda" else event.self_cpu_time_total for event in events}
    total = sum(own.values())
    ranked = sorted(events, key=lambda event: own[event.key], reverse=True)[:count]
    return [
        {"op": event.key, "calls": event.count // calls, "self_ms": own[event.key] / 1000 / calls, "share": own[event.key] / total}
        for event in ranked
    ]


# --torchvision: the steps a user writes, torchvision members and the public API only.


class TorchvisionSetting:
    """K torchvision ``resnet18(num_classes=100)`` members (ImageNet stem, full width) and one batch."""

    def __init__(self, num_members: int, batch: int, device: torch.device) -> None:
        import torchvision  # only these rows need it

        torch.manual_seed(0)
        self.num_members = num_members
        self.torchvision_version = torchvision.__version__
        self.initial = [torchvision.models.resnet18(num_classes=NUM_CLASSES).to(device) for _ in range(num_members)]
        self.images = torch.rand(batch, 3, 32, 32, device=device)
        self.labels = torch.randint(0, NUM_CLASSES, (batch,), device=device)

    def members(self) -> list[nn.Module]:
        """A fresh copy of the K members, as a plain list, in training mode."""
        return [copy.deepcopy(model).train() for model in self.initial]


class UserStep:
    """One training step of ``name`` in :data:`USER_STEPS` on its own copy of the members.

    Calling it runs the step and returns its penalty (zero without DEG). ``ensemble``: the
    ``Ensemble`` with PDD for ``pdd`` and ``pdd+deg``, else None.
    """

    def __init__(self, name: str, setting: TorchvisionSetting) -> None:
        self.name = name
        self.setting = setting
        self.models = setting.members()
        self.ensemble: Ensemble | None = None
        if "pdd" in name:
            pdd = PriorityDiversifiedDropout(setting.num_members)
            self.ensemble = Ensemble(self.models, pdd=pdd).to(setting.images.device)
        parameters = [parameter for model in self.models for parameter in model.parameters()]
        self.optimizer = torch.optim.SGD(parameters, lr=0.01, momentum=0.9)
        self.penalty = torch.zeros(())

    def __call__(self) -> Tensor:
        x, y = self.setting.images, self.setting.labels
        penalty = torch.zeros(())
        if self.name == "baseline":
            loss = sum(F.cross_entropy(model(x), y) for model in self.models)
        elif self.name == "pdd":
            loss = ensemble_cross_entropy(self.ensemble.member_logits(x), y, member_reduction="sum")
        elif self.name == "adp":
            logits = torch.stack([model(x) for model in self.models])
            loss = ensemble_cross_entropy(logits, y, member_reduction="sum") + adp_regularizer(logits, y).value
        elif self.name == "gal":
            out = gal_penalty(self.models, x, y)
            loss, penalty = out.losses.mean() + 0.5 * out.penalty, out.penalty
        elif self.name == "trs":
            terms = trs_terms(self.models, x, y, x_smooth=trs_perturbation(self.models, x, y, eps=0.03))
            penalty = 40 * terms.similarity + 0.625 * terms.smoothness
            loss = terms.losses.sum() + penalty
        elif self.name == "dverge":
            distilled = feature_distillation(self.models, x, x.roll(1, 0), eps=0.07, step_size=0.007)
            loss = dverge_loss(self.models, distilled, y).losses.sum()
        else:
            fraction = 0.25 if self.name.endswith("1/4 batch") else 1.0
            out = deg_penalty(self.models if self.ensemble is None else self.ensemble, x, y, penalty_fraction=fraction)
            loss, penalty = out.losses.mean() + 0.01 * out.penalty, out.penalty
        self.penalty = sgd_update(self.optimizer, loss, penalty)
        return self.penalty


def measure_user_steps(
    names: list[str], setting: TorchvisionSetting, *, rounds: int, warmup: int, device: torch.device, profile: int = 0
) -> dict[str, Any]:
    """:func:`interleaved_rows` of :class:`UserStep`; DEG and GAL rows add their last penalty, PDD rows the tallies made."""
    steps = {name: UserStep(name, setting) for name in names}
    rows = interleaved_rows(steps, dict.fromkeys(names, 1), rounds=rounds, warmup=warmup, device=device, profile=profile)
    for name, step in steps.items():
        if "deg" in name or name in ("gal", "trs"):
            rows[name]["last_penalty"] = float(step.penalty)
        if step.ensemble is not None:
            # K tallies (one per member) per sample and step with PDD's per-sample statistics.
            rows[name]["priority_tallies"] = int(step.ensemble.pdd.priority_counts.sum())
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="narrow members (width 8 instead of 64) for a CPU")
    parser.add_argument(
        "--torchvision",
        action="store_true",
        help="time the steps a user writes instead (torchvision resnet18 members, Ensemble, deg_penalty: USER_STEPS)",
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--members", default=None, help="comma-separated K values (default: 3,5, or 3 with --torchvision)")
    parser.add_argument("--methods", default=None, help="comma-separated steps to time (default: all of the group)")
    parser.add_argument("--batch-size", type=int, default=None, help="(default: 64, or 32 with --torchvision)")
    parser.add_argument("--width", type=int, default=None, help="ResNet base width (default: 64, or 8 with --small)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds, median reported (default: 15, or 5 with --small)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default: %(default)s)")
    parser.add_argument("--deg-every", type=int, default=4, metavar="N", help="the cheaper DEG setting's N (default: %(default)s)")
    parser.add_argument(
        "--deg-fraction",
        default="0.25",
        metavar="F[,F...]",
        help="the sub-batch DEG setting's shares of the batch, one 'deg sub-batch F' row each (default: %(default)s)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--compile",
        default=None,
        choices=("inductor", "aot_eager"),
        metavar="BACKEND",
        help="also time the compiled steps (COMPILED_PATHS) with this torch.compile backend: inductor, or aot_eager "
        "(graph capture without code generation, a quick check on a CPU) (default: none)",
    )
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="record each step's N costliest operators (torch.profiler; default: none)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="(default: benchmarks/results/train_step.json, or train_step-torchvision.json)"
    )
    args = parser.parse_args(argv)
    if args.torchvision and (args.small or args.width is not None or args.compile):
        parser.error("--torchvision: the members are torchvision's full-width resnet18; --small, --width and --compile set the harness's")
    known = tuple(USER_STEPS) if args.torchvision else PAPER_METHODS + FAST_PATHS + SUB_BATCH_PATHS + (COMPILED_PATHS if args.compile else ())
    methods = args.methods or ",".join(name for name in known if name not in SUB_BATCH_PATHS)
    names = [name.strip() for name in methods.split(",") if name.strip()]
    if "baseline" not in names or any(name not in known for name in names):
        parser.error(f"--methods: expected names from {list(known)}, baseline included, but got {methods!r}")
    try:
        fractions = [float(value) for value in args.deg_fraction.split(",")]
    except ValueError:
        fractions = []
    if not fractions or not all(0.0 < value <= 1.0 for value in fractions):
        parser.error(f"--deg-fraction: expected comma-separated numbers in (0, 1], but got {args.deg_fraction!r}")
    if "deg sub-batch F" in names:
        at = names.index("deg sub-batch F")
        names[at : at + 1] = [f"{SUB_BATCH}{value:g}" for value in fractions]
    members = args.members or ("3" if args.torchvision else "3,5")
    try:
        member_counts = [int(value) for value in members.split(",")]
    except ValueError:
        member_counts = []
    if not member_counts or min(member_counts) < 2:
        parser.error(f"--members: expected comma-separated integers >= 2, but got {members!r}")
    for flag in ("batch_size", "width", "rounds", "threads", "deg_every"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag.replace('_', '-')}: expected an integer >= 1, but got {value}")
    if args.profile < 0:
        parser.error(f"--profile: expected an integer >= 0, but got {args.profile}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    width = args.width or (8 if args.small else 64)
    batch_size = args.batch_size or (32 if args.torchvision else 64)
    rounds = args.rounds or (5 if args.small else 15)
    device = torch.device(args.device)

    results = []
    for num_members in member_counts:
        if args.torchvision:
            setting = TorchvisionSetting(num_members, batch_size, device)
            rows = measure_user_steps(names, setting, rounds=rounds, warmup=args.warmup, device=device, profile=args.profile)
        else:
            setting = Setting(num_members, width, batch_size, device)
            rows = measure(
                names,
                setting,
                rounds=rounds,
                warmup=args.warmup,
                device=device,
                deg_every=args.deg_every,
                profile=args.profile,
                compile_backend=args.compile or "inductor",
            )
        results.append({"members": num_members, "rows": rows})
        print_table(num_members, rows, device)

    settings: dict[str, Any] = {
        "members": (
            "torchvision.models.resnet18(num_classes=100), ImageNet stem"
            if args.torchvision
            else "ResNet-18 (torchvision BasicBlock, CIFAR stem)"
        ),
        "batch_size": batch_size,
        "image": [3, 32, 32],
        "classes": NUM_CLASSES,
        "rounds": rounds,
        "warmup": args.warmup,
        "memory": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "bytes saved for backward per step",
    }
    if args.torchvision:
        settings |= {"torchvision": setting.torchvision_version, "steps": {name: USER_STEPS[name] for name in names}}
    else:
        settings |= {
            "width": width, "weights": asdict(WEIGHTS), "deg_every": args.deg_every, "deg_fractions": fractions,
            "compile_backend": args.compile,
        }  # fmt: skip
    result = {"benchmark": "train_step", **machine(device), "settings": settings, "results": results}
    out = args.out or Path(f"benchmarks/results/train_step{'-torchvision' if args.torchvision else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {out}")
    return result


def print_table(num_members: int, rows: dict[str, dict[str, Any]], device: torch.device) -> None:
    memory = "peak MiB" if device.type == "cuda" else "saved MiB"
    print(f"\nK={num_members}, {device.type}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'step':<26}{'ms/step':>10}{'x baseline':>12}{'quartiles':>12}{memory:>11}{'x baseline':>12}{'penalty vs deg':>16}")
    print(f"{'':<48}{'(rounds)':>12}{'':<23}{'(% of range)':>16}")
    for name, row in rows.items():
        deviation = f"{100 * row['penalty_vs_deg']:.3f} %" if "penalty_vs_deg" in row else ""
        low, _, high = row["ratio_quartiles"]
        print(
            f"{name:<26}{1000 * row['seconds_per_step']:>10.1f}{row['ratio_to_baseline']:>12.2f}{f'{low:.2f}-{high:.2f}':>12}"
            f"{row['peak_memory_bytes'] / 2**20:>11.1f}{row['memory_ratio_to_baseline']:>12.2f}{deviation:>16}"
        )


if __name__ == "__main__":
    main()
