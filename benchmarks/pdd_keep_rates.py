"""How much PDD's inverted-dropout rescaling amplifies the kept units of a torchvision ResNet-18 ensemble.

    PYTHONPATH=src:examples python benchmarks/pdd_keep_rates.py                 # K=3, 150 steps on digits
    PYTHONPATH=src:examples python benchmarks/pdd_keep_rates.py --steps 10 --record 0 5 10

Trains K torchvision ``resnet18(num_classes=10)`` members as ``Ensemble(models,
pdd=PriorityDiversifiedDropout(K))`` (eq. 1, members' mean CE, SGD lr 0.02, momentum 0.9) on
scikit-learn's digits, upsampled to 3 x 32 x 32, and at the recorded steps measures, on one
fixed training batch in training mode (the parameters and BatchNorm statistics restored after):

- the distribution of the rescaling factor 1/p over all units of the stacked features
  ``[K, B, C]`` (p = eq. 2's keep rate; units with p = 0 are never kept and left out), and over
  the units outside their member's priority interval, whose rate is ``beta (1 - N/C) <= beta``;
- the share of the feature mass (sum of activations) sitting in units with 1/p >= 10;
- the members' mean cross-entropy through PDD for each ``--floors`` value of
  ``rescale_floor`` (0 is the library's default), against the same members without PDD: the
  inflated starting loss the rescaling causes (ln 10 = 2.30 for a uniform guess).

Prints one table per recorded step and writes every number to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from sklearn.datasets import load_digits
from torch import Tensor

from ensemble_diversity import Ensemble, PriorityDiversifiedDropout

QUANTILES = (0.5, 0.9, 0.99, 1.0)


def digits_images(size: int) -> tuple[Tensor, Tensor]:
    """Digits as ``[N, 3, size, size]`` in [0, 1] (bilinear upsampling of the 8 x 8 images) with labels ``[N]``."""
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)
    return images.contiguous(), torch.tensor(digits.target, dtype=torch.long)


def quantiles(values: Tensor) -> dict[str, float]:
    if values.numel() == 0:
        return {}
    q = torch.quantile(values.double(), torch.tensor(QUANTILES, dtype=torch.float64))
    return {f"q{round(100 * level)}": float(v) for level, v in zip(QUANTILES, q)}


@torch.no_grad()
def measure(ensemble: Ensemble, images: Tensor, labels: Tensor, floors: list[float], seed: int) -> dict[str, Any]:
    """The 1/keep-rate distribution and the CE through PDD with each floor, on one batch; the ensemble's state is restored."""
    if ensemble.pdd is None:
        raise ValueError("Expected an Ensemble with PDD, but its pdd is None")
    saved = {name: value.clone() for name, value in ensemble.state_dict().items() if isinstance(value, Tensor)}
    pdd = ensemble.pdd
    features = ensemble.member_outputs(images).features  # [K, B, C], training-mode BatchNorm, before PDD
    stats = pdd.priority_statistics(features)
    rate = stats.keep_rate
    outside = stats.interval != stats.priority_interval.unsqueeze(-1)
    kept = rate > 0
    factor = 1.0 / rate[kept]
    amplified = (rate > 0) & (rate <= 0.1)
    mass = features.clamp_min(0)
    row: dict[str, Any] = {
        "factor_all_units": quantiles(factor),
        "factor_outside_priority": quantiles(1.0 / rate[kept & outside]),
        "share_units_outside_priority": float(outside.double().mean()),
        "share_units_rate_0": float((~kept).double().mean()),
        "share_units_factor_ge_100": float((kept & (rate <= 0.01)).double().mean()),
        "share_mass_factor_ge_10": float(mass[amplified].sum() / mass.sum().clamp_min(1e-12)),
    }
    ensemble.eval()
    row["ce_without_pdd_eval"] = float(F.cross_entropy(ensemble.member_logits(images).flatten(0, 1), labels.repeat(ensemble.num_members)))
    ensemble.train()
    ce: dict[str, float] = {}
    for floor in floors:
        ensemble.pdd = PriorityDiversifiedDropout(
            pdd.num_members, pdd.num_intervals, pdd.alpha, pdd.beta, statistics=pdd.statistics, rescale_floor=floor
        )
        torch.manual_seed(seed)  # the same masks for every floor
        logits = ensemble.member_logits(images)
        ce[str(floor)] = float(F.cross_entropy(logits.flatten(0, 1), labels.repeat(ensemble.num_members)))
        ensemble.load_state_dict(saved, strict=False)  # BatchNorm's running statistics, moved by this pass
    ensemble.pdd = pdd
    row["ce_through_pdd_by_floor"] = ce
    ensemble.load_state_dict(saved, strict=False)  # strict=False: `saved` leaves out PDD's extra state, unchanged
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--steps", type=int, default=150, help="SGD steps in all (default: 150, about 5.5 epochs of digits)")
    parser.add_argument("--record", type=int, nargs="+", default=[0, 1, 2, 5, 10, 50, 150], help="steps after which to measure")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--floors", type=float, nargs="+", default=[0.0, 0.02, 0.05, 0.1], help="rescale_floor values for the CE column")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="JSON file for every number (default: none)")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    images, labels = digits_images(args.image_size)
    models = [torchvision.models.resnet18(num_classes=10) for _ in range(args.members)]
    ensemble = Ensemble(models, pdd=PriorityDiversifiedDropout(args.members)).train()
    optimizer = torch.optim.SGD(ensemble.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(args.seed)
    probe = torch.randperm(len(labels), generator=generator)[: args.batch_size]  # the fixed measuring batch
    rows: dict[str, Any] = {}
    start = time.perf_counter()
    order = torch.randperm(len(labels), generator=generator)
    position = 0
    for step in range(args.steps + 1):
        if step in args.record:
            row = measure(ensemble, images[probe], labels[probe], args.floors, args.seed)
            rows[str(step)] = row
            print(f"\nafter {step} steps ({time.perf_counter() - start:.0f} s)")
            print(f"  1/p, all kept-able units:      {_fmt(row['factor_all_units'])}")
            print(f"  1/p, outside priority:         {_fmt(row['factor_outside_priority'])}")
            print(
                f"  units outside priority {row['share_units_outside_priority']:.3f}, rate 0 {row['share_units_rate_0']:.3f}, "
                f"1/p >= 100 {row['share_units_factor_ge_100']:.3f}; feature mass at 1/p >= 10: {row['share_mass_factor_ge_10']:.3f}"
            )
            ce = ", ".join(f"floor {floor}: {value:.2f}" for floor, value in row["ce_through_pdd_by_floor"].items())
            print(f"  members' CE without PDD (eval) {row['ce_without_pdd_eval']:.2f}; through PDD: {ce}")
        if step == args.steps:
            break
        if position + args.batch_size > len(order):
            order, position = torch.randperm(len(labels), generator=generator), 0
        batch = order[position : position + args.batch_size]
        position += args.batch_size
        logits = ensemble.member_logits(images[batch])
        loss = F.cross_entropy(logits.flatten(0, 1), labels[batch].repeat(args.members))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if not math.isfinite(float(loss)):
            raise RuntimeError(f"the training loss diverged at step {step}")
    result = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "seconds": time.perf_counter() - start, "rows": rows}
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def _fmt(q: dict[str, float]) -> str:
    return "  ".join(f"{name} {value:8.1f}" for name, value in q.items())


if __name__ == "__main__":
    main()
