"""Micro-benchmark of the PDD op alone: time per call of PriorityDiversifiedDropout in training mode.

    PYTHONPATH=src python benchmarks/pdd_op.py [--device cpu|cuda] [--repeats 7] [--out FILE]

For ``[K, B, C]`` = ``[3, 128, 512]`` and ``[5, 128, 512]`` it times, interleaved and after a
warm-up, the median over repeats of:

- ``dropout``: ``torch.nn.functional.dropout`` on the same tensor, the cost of a plain dropout;
- ``pdd``: PDD in eager mode (histogram, top-K, keep rates, Bernoulli mask);
- ``pdd compiled``: ``torch.compile(pdd, fullgraph=True)``.

It prints each time and its ratio to plain dropout, and writes JSON with the machine, the torch
version and the settings. On CUDA it also runs PDD under
``torch.cuda.set_sync_debug_mode("error")``, which raises on any host synchronisation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from machine import machine

from ensemble_diversity import PriorityDiversifiedDropout

SHAPES = ((3, 128, 512), (5, 128, 512))


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_per_call(fn: Callable[[], object], device: torch.device, calls: int) -> float:
    synchronise(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    synchronise(device)
    return (time.perf_counter() - start) / calls


def check_no_host_sync(pdd: PriorityDiversifiedDropout, features: torch.Tensor) -> str:
    if features.device.type != "cuda":
        return "not applicable (CPU)"
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        pdd(features)
        pdd.keep_probabilities(features)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return "passed: no host synchronisation"


def calls(pdd: PriorityDiversifiedDropout, features: torch.Tensor) -> dict[str, Callable[[], object]]:
    """The timed calls on ``features``: plain dropout, PDD, and PDD compiled."""
    compiled = torch.compile(pdd, fullgraph=True)
    return {
        "dropout": lambda: F.dropout(features, p=0.5, training=True),
        "pdd": lambda: pdd(features),
        "pdd compiled": lambda: compiled(features),
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds; the median is reported (default: %(default)s)")
    parser.add_argument("--calls", type=int, default=50, help="calls per round (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/pdd_op.json"))
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    device = torch.device(args.device)

    rows = []
    for shape in SHAPES:
        torch.manual_seed(0)
        features = torch.relu(torch.randn(shape, device=device))
        pdd = PriorityDiversifiedDropout(shape[0]).to(device)
        candidates = calls(pdd, features)
        for fn in candidates.values():  # warm-up, compilation included
            time_per_call(fn, device, 3)
        times: dict[str, list[float]] = {name: [] for name in candidates}
        for _ in range(args.repeats):  # interleaved, so drift affects all alike
            for name, fn in candidates.items():
                times[name].append(time_per_call(fn, device, args.calls))
        medians = {name: statistics.median(values) for name, values in times.items()}
        rows.append(
            {
                "shape": list(shape),
                "seconds_per_call": medians,
                "ratio_to_dropout": {name: medians[name] / medians["dropout"] for name in medians},
                "sync_check": check_no_host_sync(pdd, features),
            }
        )

    result = {
        "benchmark": "pdd_op",
        **machine(device),
        "settings": {"repeats": args.repeats, "calls": args.calls, "num_intervals": "default (10 for K=3, 20 for K=5)"},
        "rows": rows,
    }
    print(f"PDD op, {args.device}, torch {torch.__version__}, median of {args.repeats} x {args.calls} calls")
    print(f"{'[K, B, C]':<16}{'dropout us':>12}{'pdd us':>10}{'compiled us':>13}{'pdd/dropout':>13}{'compiled/dropout':>18}")
    for row in rows:
        s, r = row["seconds_per_call"], row["ratio_to_dropout"]
        print(
            f"{str(row['shape']):<16}{s['dropout'] * 1e6:>12.1f}{s['pdd'] * 1e6:>10.1f}{s['pdd compiled'] * 1e6:>13.1f}"
            f"{r['pdd']:>13.2f}{r['pdd compiled']:>18.2f}"
        )
        print(f"  sync check: {row['sync_check']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {args.out}")
    return result


if __name__ == "__main__":
    main()
