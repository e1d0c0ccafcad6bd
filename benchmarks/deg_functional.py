"""DEG's exact penalty computed functionally (``torch.func``), eager and under ``torch.compile``, against the library's eager path.

    PYTHONPATH=src python benchmarks/deg_functional.py                  # CPU, one thread: compiles for about 10-20 minutes
    PYTHONPATH=src python benchmarks/deg_functional.py --steps baseline,deg,deg\\ functional --rounds 5   # eager rows only

Why (issue 12, part 2): an exact DEG step costs about 3.2x a baseline step for narrow
CIFAR-stem ResNet-18 members on a 2-core CPU, and BatchNorm's double backward, a composite of
small element-wise ops, is about 31 % of it. ``torch.compile`` cannot differentiate a compiled
graph twice (``.backward()`` of an ``autograd.grad(create_graph=True)`` result), so here the
first-order input gradient is part of the compiled function's *forward*: each member's loss
gradient with respect to its input comes from ``torch.func.grad`` over
``torch.func.functional_call`` (parameters and buffers passed explicitly, so BatchNorm's
running statistics are updated as in eager mode), the penalty (eq. 3) is reduced from those
gradients, and the parameters' gradient of the objective is an ordinary first-order backward of
that function, which AOTAutograd traces and inductor can fuse.

Steps timed (each: forward, objective ``losses.mean() + 0.01 * penalty`` as in the authors' code,
``backward()``, SGD with momentum 0.9), on K members of one architecture built here from
torchvision's ``BasicBlock`` (ResNet-18, CIFAR stem: a 3x3 convolution, no pooling, base width
8 by default, the harness's ``--small`` members):

- ``baseline``: the K members' cross-entropy summed, no penalty (the ratio's denominator);
- ``deg``: ``deg_penalty(models, x, y)``, the library's eager path (the reference);
- ``deg functional``: ``torch.func.grad`` of each member's loss with respect to its input, one
  call per member (:func:`functional_deg_objective`), eager;
- ``deg functional vmap``: the same with the K members' stacked parameters and buffers under
  one ``torch.func.vmap`` (:func:`vectorized_deg_objective`), eager;
- ``... aot_eager`` / ``... inductor``: those two functions under ``torch.compile`` with that
  backend (``aot_eager`` traces with AOTAutograd but runs the traced aten ops one by one, so it
  separates the effect of tracing from inductor's fusion);
- ``baseline inductor``: the baseline's members' loss compiled, for what inductor gains on a
  plain step on this machine.

The first step of each row compiles (forward at the call, backward at the first
``backward()``): its time less the row's median step is reported as compile time. That first
step also checks exactness: every row starts from the same members and batch, and its
penalty, parameter gradients and BatchNorm running statistics after the step are compared with
``deg``'s and with ``deg``'s in float64 (``exactness_vs_deg`` in the JSON: the largest absolute
differences, and for the gradients the largest ``max |a - b| / max |b|`` over parameter
tensors; ``deg``'s own row against float64 is the scale of float32 rounding). A row
that fails (an unsupported op, a graph break under ``fullgraph=True``, an error) is recorded
with its error and dropped from the timing.

Timing: the rows are interleaved (each once per round, in a rotated order), warm-up rounds
excluded; each row has the median and quartiles of its time and of its per-round ratio to the
baseline's time in the same round (rows of one round share the machine's load of that moment).
JSON (``--out``): the machine record, torch and torchvision versions, the settings, every
round's times, compile times, exactness and failures; ``--profile N`` adds each row's N
costliest operators in one more step under ``torch.profiler``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
import torchvision
from machine import machine
from torch import Tensor, nn
from torch.func import functional_call, grad, stack_module_state, vmap
from torchvision.models.resnet import BasicBlock

from ensemble_diversity import deg_penalty
from ensemble_diversity.deg import dispersed_gradient_loss

DEG_LAMBDA = 0.01
"""lambda of eq. 4, the authors' ``--beta``; the objective is ``losses.mean() + DEG_LAMBDA * penalty``."""
STEPS = (
    "baseline",
    "deg",
    "deg functional",
    "deg functional vmap",
    "deg functional aot_eager",
    "deg functional vmap aot_eager",
    "deg functional inductor",
    "deg functional vmap inductor",
    "baseline inductor",
)
OUT = Path(__file__).resolve().parent / "results" / "deg_functional.json"


class Objective(NamedTuple):
    """What the objective functions below return."""

    objective: Tensor
    """Scalar: ``losses.mean() + DEG_LAMBDA * penalty`` (eq. 4 as in the authors' code)."""
    penalty: Tensor
    """Scalar: eq. 3, the pairwise cosines of the input gradients, batch-averaged, summed over pairs."""
    losses: Tensor
    """``[K]``: each member's cross-entropy on the batch."""


def resnet18_member(*, width: int = 8, num_classes: int = 100) -> nn.Sequential:
    """ResNet-18 with the CIFAR stem (3x3 convolution, no pooling) at base width ``width``; ``[B, 3, H, W] -> [B, num_classes]``.

    The layout of the harness's ``ResNetMember(18, ...)``, built here from torchvision's blocks
    so that this benchmark does not import ``examples/``.
    """
    layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
    channels = width
    for stage in range(4):
        planes = width * 2**stage
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            shortcut = None
            if stride != 1 or channels != planes:
                shortcut = nn.Sequential(nn.Conv2d(channels, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))
            layers.append(BasicBlock(channels, planes, stride, shortcut))
            channels = planes
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)


def _member_loss(template: nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """One member's cross-entropy on ``x`` ``[B, ...]``, twice: the value ``torch.func.grad`` differentiates and its auxiliary copy."""
    loss = F.cross_entropy(functional_call(template, (params, buffers), (x,)), y)
    return loss, loss


def functional_deg_objective(
    template: nn.Module, params: Sequence[dict[str, Tensor]], buffers: Sequence[dict[str, Tensor]], x: Tensor, y: Tensor
) -> Objective:
    """DEG's objective with each member's input gradient from ``torch.func.grad``, one call per member.

    Args:
        template: the members' architecture (its own parameters are not used; it may live on
            the meta device).
        params: K dicts ``name -> tensor``, member k's parameters (``dict(member.named_parameters())``).
        buffers: K dicts ``name -> tensor``, member k's buffers; BatchNorm in training mode
            updates them in place, as the eager members would.
        x: ``[B, ...]`` (batch, input dimensions), the input all members run on.
        y: ``[B]`` class indices.

    Returns:
        :class:`Objective`; ``objective.backward()`` reaches every member's parameters (the
        input gradients keep their graph with respect to ``params``).
    """
    grads, losses = [], []
    for member_params, member_buffers in zip(params, buffers):
        member_grad, loss = grad(_member_loss, argnums=3, has_aux=True)(template, member_params, member_buffers, x, y)
        grads.append(member_grad)
        losses.append(loss)
    return _objective(torch.stack(grads), torch.stack(losses))


def vectorized_deg_objective(template: nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor, y: Tensor) -> Objective:
    """DEG's objective with the K input gradients from one ``torch.func.vmap`` of ``torch.func.grad`` over the members.

    Args:
        template: the members' architecture, as for :func:`functional_deg_objective`.
        params: ``name -> [K, ...]``, the members' parameters stacked (``torch.func.stack_module_state``).
        buffers: ``name -> [K, ...]``, the members' buffers stacked; updated in place.
        x: ``[B, ...]``, shared by the members.
        y: ``[B]`` class indices.
    """
    member_grad = grad(_member_loss, argnums=3, has_aux=True)
    grads, losses = vmap(member_grad, in_dims=(None, 0, 0, None, None), randomness="different")(template, params, buffers, x, y)
    return _objective(grads, losses)


def _objective(grads: Tensor, losses: Tensor) -> Objective:
    """``grads`` ``[K, B, ...]`` and ``losses`` ``[K]`` to eq. 4's objective."""
    penalty = dispersed_gradient_loss(grads)
    return Objective(losses.mean() + DEG_LAMBDA * penalty, penalty, losses)


def _baseline_objective(models: Sequence[nn.Module], x: Tensor, y: Tensor) -> Tensor:
    return torch.stack([F.cross_entropy(model(x), y) for model in models]).sum()


class Step(NamedTuple):
    """One timed row: ``run()`` takes an SGD step and returns the penalty (0 without one)."""

    run: Callable[[], Tensor]
    state: Callable[[], tuple[list[list[Tensor]], list[list[Tensor]]]]
    """``(gradients, buffers)``: per member, its parameters' current ``.grad`` and its floating buffers, in ``named_parameters`` order."""
    objective: Callable[[], Tensor]
    """The last step's objective (detached)."""


def make_step(name: str, members: Sequence[nn.Module], x: Tensor, y: Tensor, *, fullgraph: bool = True) -> Step:
    """The row ``name`` of :data:`STEPS` on its own copy of ``members``; compiled rows compile at their first ``run()``."""
    models = [copy.deepcopy(member) for member in members]
    backend = next((backend for backend in ("aot_eager", "inductor") if name.endswith(" " + backend)), None)
    last: dict[str, Tensor] = {}

    def compiled(function: Callable[..., Any]) -> Callable[..., Any]:
        return function if backend is None else torch.compile(function, backend=backend, fullgraph=fullgraph)

    if name.startswith("deg functional vmap"):
        stacked_params, stacked_buffers = stack_module_state(models)
        params = {key: nn.Parameter(value.detach()) for key, value in stacked_params.items()}
        template = copy.deepcopy(models[0]).to("meta")
        objective_fn = compiled(vectorized_deg_objective)
        optimizer = torch.optim.SGD(params.values(), lr=0.01, momentum=0.9)

        def compute() -> tuple[Tensor, Tensor]:
            out = objective_fn(template, params, stacked_buffers, x, y)
            return out.objective, out.penalty

        def state() -> tuple[list[list[Tensor]], list[list[Tensor]]]:
            names = [key for key, _ in members[0].named_parameters()]
            buffer_names = [key for key, value in members[0].named_buffers() if value.is_floating_point()]
            return (
                [[params[key].grad[k] for key in names] for k in range(len(models))],
                [[stacked_buffers[key][k] for key in buffer_names] for k in range(len(models))],
            )

    else:
        optimizer = torch.optim.SGD([p for model in models for p in model.parameters()], lr=0.01, momentum=0.9)
        if name.startswith("deg functional"):
            member_params = [dict(model.named_parameters()) for model in models]
            member_buffers = [dict(model.named_buffers()) for model in models]
            template = copy.deepcopy(models[0]).to("meta")
            objective_fn = compiled(functional_deg_objective)

            def compute() -> tuple[Tensor, Tensor]:
                out = objective_fn(template, member_params, member_buffers, x, y)
                return out.objective, out.penalty

        elif name == "deg":

            def compute() -> tuple[Tensor, Tensor]:
                out = deg_penalty(models, x, y)
                return out.losses.mean() + DEG_LAMBDA * out.penalty, out.penalty

        elif name.startswith("baseline"):
            baseline_fn = compiled(_baseline_objective)

            def compute() -> tuple[Tensor, Tensor]:
                return baseline_fn(models, x, y), torch.zeros(())

        else:
            raise ValueError(f"Expected a step named one of {list(STEPS)}, but got {name!r}")

        def state() -> tuple[list[list[Tensor]], list[list[Tensor]]]:
            return (
                [[p.grad for p in model.parameters()] for model in models],
                [[b for b in model.buffers() if b.is_floating_point()] for model in models],
            )

    def run() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        objective, penalty = compute()
        objective.backward()
        optimizer.step()
        last["objective"] = objective.detach()
        return penalty.detach()

    return Step(run, state, lambda: last["objective"])


def _max_difference(first: list[list[Tensor]], second: list[list[Tensor]]) -> float:
    return max(float((a - b).abs().max()) for a_member, b_member in zip(first, second) for a, b in zip(a_member, b_member))


def _max_relative_difference(first: list[list[Tensor]], second: list[list[Tensor]]) -> float:
    """The largest over tensors of ``max |a - b| / max |b|``: the difference on the scale of the tensor it is in."""
    return max(
        float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))
        for a_member, b_member in zip(first, second)
        for a, b in zip(a_member, b_member)
    )


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """Lower quartile, median, upper quartile (``statistics.quantiles``, inclusive); one value is its own quartiles."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    low, median, high = statistics.quantiles(values, n=4, method="inclusive")
    return low, median, high


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated rows, from {', '.join(STEPS)}")
    parser.add_argument("--members", type=int, default=3, help="K")
    parser.add_argument("--width", type=int, default=8, help="base width of the ResNet-18 members (64: the paper's)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds (every row once per round)")
    parser.add_argument("--warmup", type=int, default=2, help="rounds run after the compiling first step, not timed")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (1: the shared 2-core machine)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        help="after timing, one more step of each row under torch.profiler: its N costliest operators (self CPU time)",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    names = [name.strip() for name in args.steps.split(",") if name.strip()]
    unknown = [name for name in names if name not in STEPS]
    if unknown or "baseline" not in names or "deg" not in names:
        raise ValueError(f"Expected --steps to name rows of {list(STEPS)}, baseline and deg among them, but got {names}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    members = [resnet18_member(width=args.width, num_classes=args.num_classes) for _ in range(args.members)]
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    y = torch.randint(0, args.num_classes, (args.batch_size,))

    steps: dict[str, Step] = {}
    first_seconds: dict[str, float] = {}
    first_penalty: dict[str, float] = {}
    failures: dict[str, str] = {}
    states: dict[str, tuple[list[list[Tensor]], list[list[Tensor]]]] = {}
    for name in names:
        # Every row's first step: the same members, the same batch; compiled rows compile here.
        try:
            step = make_step(name, members, x, y)
            start = time.perf_counter()
            penalty = step.run()
            first_seconds[name] = time.perf_counter() - start
        except Exception as error:  # a failing row is a result: recorded with its error
            failures[name] = f"{type(error).__name__}: {error}"[:2000]
            print(f"{name}: FAILED\n{traceback.format_exc(limit=3)}", file=sys.stderr, flush=True)
            continue
        steps[name] = step
        first_penalty[name] = float(penalty)
        grads, buffers = step.state()
        states[name] = ([[t.detach().clone() for t in member] for member in grads], [[t.detach().clone() for t in member] for member in buffers])
        print(f"{name}: first step {first_seconds[name]:.1f} s, penalty {first_penalty[name]:.6f}", flush=True)

    # The scale of float32 rounding: the same first step of ``deg`` in float64.
    step64 = make_step("deg", [copy.deepcopy(member).double() for member in members], x.double(), y)
    penalty64 = float(step64.run())
    grads64, buffers64 = step64.state()
    exactness: dict[str, dict[str, float]] = {}
    reference_grads, reference_buffers = states["deg"]
    for name in steps:
        if name.startswith("baseline"):
            continue
        grads, buffers = states[name]
        exactness[name] = {
            "penalty": abs(first_penalty[name] - first_penalty["deg"]),
            "parameter_gradients": _max_difference(grads, reference_grads),
            "parameter_gradients_relative": _max_relative_difference(grads, reference_grads),
            "running_statistics": _max_difference(buffers, reference_buffers),
            "penalty_vs_float64": abs(first_penalty[name] - penalty64),
            "parameter_gradients_relative_vs_float64": _max_relative_difference(grads, grads64),
            "running_statistics_vs_float64": _max_difference(buffers, buffers64),
        }

    order = list(steps)
    times: dict[str, list[float]] = {name: [] for name in order}
    for round_index in range(args.warmup + args.rounds):
        shift = round_index % len(order)
        for name in order[shift:] + order[:shift]:
            start = time.perf_counter()
            steps[name].run()
            seconds = time.perf_counter() - start
            if round_index >= args.warmup:
                times[name].append(seconds)
        print(f"round {round_index + 1}/{args.warmup + args.rounds}", flush=True)

    profiles = {name: profile_step(steps[name], args.profile) for name in order} if args.profile else {}
    rows: dict[str, dict[str, Any]] = {}
    for name in order:
        low, median, high = quartiles(times[name])
        ratios = [seconds / base for seconds, base in zip(times[name], times["baseline"])]
        ratio_low, ratio, ratio_high = quartiles(ratios)
        rows[name] = {
            "seconds_per_step": median,
            "seconds_quartiles": [low, high],
            "ratio_to_baseline": median / statistics.median(times["baseline"]),
            "round_ratio_median": ratio,
            "round_ratio_quartiles": [ratio_low, ratio_high],
            "first_step_seconds": first_seconds[name],
            "compile_seconds": max(0.0, first_seconds[name] - median) if "aot_eager" in name or "inductor" in name else 0.0,
            "first_penalty": first_penalty[name],
            "exactness_vs_deg": exactness.get(name),
            "all_seconds": times[name],
        }
        if profiles:
            rows[name]["profile"] = profiles[name]
    result = {
        "benchmark": "deg_functional",
        "command": "python benchmarks/deg_functional.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(torch.device("cpu")),
        "torchvision": torchvision.__version__,
        "settings": {
            "members": args.members,
            "architecture": f"ResNet-18, CIFAR stem, base width {args.width} (torchvision BasicBlock)",
            "batch_size": args.batch_size,
            "image_size": args.image_size,
            "num_classes": args.num_classes,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "threads": args.threads,
            "seed": args.seed,
            "deg_lambda": DEG_LAMBDA,
            "optimizer": "SGD lr 0.01 momentum 0.9",
            "batchnorm": "training mode, running statistics updated (functional rows: buffers passed explicitly)",
        },
        "rows": rows,
        "failures": failures,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print_table(result)
    return result


def profile_step(step: Step, top: int) -> list[dict[str, Any]]:
    """One ``step.run()`` under ``torch.profiler``: its ``top`` costliest operators by self CPU time, with their share of the step."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        step.run()
    events = [event for event in profiler.key_averages() if event.self_cpu_time_total > 0]
    total = sum(event.self_cpu_time_total for event in events)
    events.sort(key=lambda event: event.self_cpu_time_total, reverse=True)
    return [
        {"operator": event.key, "calls": event.count, "self_ms": event.self_cpu_time_total / 1000, "share": event.self_cpu_time_total / total}
        for event in events[:top]
    ]


def print_table(result: dict[str, Any]) -> None:
    print(
        "| step | ms (quartiles) | x baseline | per-round ratio (quartiles) | compile s | grad diff vs deg (relative) | vs float64 deg (relative) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, row in result["rows"].items():
        low, high = row["seconds_quartiles"]
        ratio_low, ratio_high = row["round_ratio_quartiles"]
        exact = row["exactness_vs_deg"]
        print(
            f"| {name} | {1000 * row['seconds_per_step']:.0f} ({1000 * low:.0f}-{1000 * high:.0f}) | {row['ratio_to_baseline']:.2f} | "
            f"{row['round_ratio_median']:.2f} ({ratio_low:.2f}-{ratio_high:.2f}) | {row['compile_seconds']:.0f} | "
            f"{'' if exact is None else format(exact['parameter_gradients_relative'], '.1e')} | "
            f"{'' if exact is None else format(exact['parameter_gradients_relative_vs_float64'], '.1e')} |"
        )
    for name, error in result["failures"].items():
        print(f"| {name} | failed: {error.splitlines()[0][:200]} | | | | | |")


if __name__ == "__main__":
    main()
