"""What each regulariser costs per training step, as a ratio to the baseline measured in the same run.

    PYTHONPATH=src python benchmarks/train_step.py --small          # narrow members, 2 CPU cores, minutes
    PYTHONPATH=src python benchmarks/train_step.py --device cuda    # ResNet-18 members, the issue's setting

One step is forward, loss, backward and SGD update of K ResNet-18 members (torchvision's blocks,
CIFAR stem, ``examples/ed_examples/resnet.py``) on a batch of 64 images 3x32x32 with 100
classes, built by the training objective of ``examples/`` (``ed_examples.methods``), so what is
timed is what the examples train. Steps timed:

- the methods: ``baseline`` (eq. 1), ``adp``, ``pdd``, ``deg``, ``pdd+deg``, ``gal``;
- cheaper or faster settings of DEG, with their effect on the penalty where one step shows it
  (``penalty_vs_deg``: the absolute difference of the first step's penalty from plain DEG's,
  same members, same batch, as a fraction of the penalty's range ``[-P, P]``, P = K(K-1)/2
  pairs; a relative difference would be meaningless, the penalty starting near 0):
  ``deg every N`` (the penalty on one step in N, ``--deg-every N`` of the examples, N = 4 by
  default; time per step averaged over the N), ``deg bf16`` (autocast to bfloat16), ``deg vmap`` and ``baseline vmap``
  (members run as one ``VectorizedMembers`` call per half);
- ``deg one pass per member``: the input gradients taken with one backward pass per member on
  a shared input, the path this library replaced with ``member_inputs`` (for the record).

Steps are interleaved (every method once per round), warm-up rounds excluded, and the median
over rounds reported, with peak memory (CUDA: ``torch.cuda.max_memory_allocated``; CPU: the
bytes autograd saved for backward, the part of memory a regulariser adds). Prints a table of
ratios to the baseline and writes JSON with the machine, torch version and settings.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from ed_examples.methods import METHODS, Weights, training_objective  # noqa: E402
from ed_examples.resnet import ResNetMember  # noqa: E402
from machine import machine  # noqa: E402

from ensemble_diversity import Ensemble, PriorityDiversifiedDropout, VectorizedMembers, ensemble_cross_entropy  # noqa: E402
from ensemble_diversity.deg import dispersed_gradient_loss, member_input_gradients, member_inputs  # noqa: E402

PAPER_METHODS = ("baseline", "adp", "pdd", "deg", "pdd+deg", "gal")
FAST_PATHS = ("deg every N", "deg bf16", "baseline vmap", "deg vmap", "deg one pass per member")
WEIGHTS = Weights(ce_reduction="mean", deg_lambda=0.01, adp_alpha=2.0, adp_beta=0.5, gal_lambda=0.5)
NUM_CLASSES = 100
PENALTY_COMPARED = ("deg bf16", "deg vmap", "deg one pass per member")
"""Steps whose first penalty is compared with plain DEG's (``deg every N``'s first step is plain DEG)."""


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


def step_function(name: str, setting: Setting, deg_every: int = 4) -> Callable[[], Tensor]:
    """A closure running one training step of ``name``; it returns the step's penalty (detached)."""
    if name in ("baseline vmap", "deg vmap"):
        return _vectorized_step(setting, deg=name == "deg vmap")
    if name == "deg one pass per member":
        return _shared_input_deg_step(setting)
    method_name = {"deg every N": "deg", "deg bf16": "deg"}.get(name, name)
    method = METHODS[method_name]
    members = setting.members()
    pdd = PriorityDiversifiedDropout(setting.num_members).to(setting.images.device) if method.pdd else None
    ensemble = Ensemble(members, pdd=pdd)
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
                method, ensemble, setting.images, setting.labels, WEIGHTS, with_penalty=with_penalty
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
    names: list[str], setting: Setting, *, rounds: int, warmup: int, device: torch.device, deg_every: int
) -> dict[str, Any]:
    steps = {name: step_function(name, setting, deg_every) for name in names}
    # "deg every N" is timed over whole cycles of N steps; the others one step at a time.
    calls = {name: deg_every if name == "deg every N" else 1 for name in names}
    for _ in range(warmup):
        for name in names:
            timed(steps[name], device, calls[name])
    seconds: dict[str, list[float]] = {name: [] for name in names}
    memory: dict[str, int] = {}
    for _ in range(rounds):  # interleaved, so drift (other load, clocks) affects all alike
        for name in names:
            elapsed, peak = timed(steps[name], device, calls[name])
            seconds[name].append(elapsed)
            memory[name] = max(memory.get(name, 0), peak)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    deg_penalty_value = first_step_penalty("deg", setting) if "deg" in names else None
    rows = {}
    for name in names:
        row: dict[str, Any] = {
            "seconds_per_step": medians[name],
            "ratio_to_baseline": medians[name] / medians["baseline"],
            "all_seconds": seconds[name],
            "peak_memory_bytes": memory[name],
            "memory_ratio_to_baseline": memory[name] / max(memory["baseline"], 1),
        }
        if deg_penalty_value is not None and name in PENALTY_COMPARED:
            value = first_step_penalty(name, setting)
            row["first_step_penalty"] = value
            pairs = setting.num_members * (setting.num_members - 1) / 2
            row["penalty_vs_deg"] = abs(value - deg_penalty_value) / (2 * pairs)
        rows[name] = row
    if deg_penalty_value is not None:
        rows["deg"]["first_step_penalty"] = deg_penalty_value
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="narrow members (width 8 instead of 64) for a CPU")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--members", default="3,5", help="comma-separated K values (default: %(default)s)")
    parser.add_argument("--methods", default=",".join(PAPER_METHODS + FAST_PATHS), help="comma-separated steps to time (default: all)")
    parser.add_argument("--batch-size", type=int, default=64, help="(default: %(default)s)")
    parser.add_argument("--width", type=int, default=None, help="ResNet base width (default: 64, or 8 with --small)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds, median reported (default: 15, or 5 with --small)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default: %(default)s)")
    parser.add_argument("--deg-every", type=int, default=4, metavar="N", help="the cheaper DEG setting's N (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/train_step.json"))
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.methods.split(",") if name.strip()]
    known = PAPER_METHODS + FAST_PATHS
    if "baseline" not in names or any(name not in known for name in names):
        parser.error(f"--methods: expected names from {list(known)}, baseline included, but got {args.methods!r}")
    try:
        member_counts = [int(value) for value in args.members.split(",")]
    except ValueError:
        member_counts = []
    if not member_counts or min(member_counts) < 2:
        parser.error(f"--members: expected comma-separated integers >= 2, but got {args.members!r}")
    for flag in ("batch_size", "width", "rounds", "threads", "deg_every"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag.replace('_', '-')}: expected an integer >= 1, but got {value}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    width = args.width or (8 if args.small else 64)
    rounds = args.rounds or (5 if args.small else 15)
    device = torch.device(args.device)

    results = []
    for num_members in member_counts:
        setting = Setting(num_members, width, args.batch_size, device)
        rows = measure(names, setting, rounds=rounds, warmup=args.warmup, device=device, deg_every=args.deg_every)
        results.append({"members": num_members, "rows": rows})
        print_table(num_members, rows, device)

    result = {
        "benchmark": "train_step",
        **machine(device),
        "settings": {
            "members": "ResNet-18 (torchvision BasicBlock, CIFAR stem)",
            "width": width,
            "batch_size": args.batch_size,
            "image": [3, 32, 32],
            "classes": NUM_CLASSES,
            "rounds": rounds,
            "warmup": args.warmup,
            "weights": WEIGHTS._asdict(),
            "deg_every": args.deg_every,
            "memory": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "bytes saved for backward per step",
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {args.out}")
    return result


def print_table(num_members: int, rows: dict[str, dict[str, Any]], device: torch.device) -> None:
    memory = "peak MiB" if device.type == "cuda" else "saved MiB"
    print(f"\nK={num_members}, {device.type}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'step':<26}{'ms/step':>10}{'x baseline':>12}{memory:>11}{'x baseline':>12}{'penalty vs deg':>16}")
    print(f"{'':<71}{'(% of range)':>16}")
    for name, row in rows.items():
        deviation = f"{100 * row['penalty_vs_deg']:.3f} %" if "penalty_vs_deg" in row else ""
        print(
            f"{name:<26}{1000 * row['seconds_per_step']:>10.1f}{row['ratio_to_baseline']:>12.2f}"
            f"{row['peak_memory_bytes'] / 2**20:>11.1f}{row['memory_ratio_to_baseline']:>12.2f}{deviation:>16}"
        )


if __name__ == "__main__":
    main()
