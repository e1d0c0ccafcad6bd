"""Quickstart: PDD + DEG in your own training loop, with the public API of ensemble_diversity alone.

    PYTHONPATH=src python examples/quickstart.py              # 3 members on digits, 300 steps, seconds on a CPU
    PYTHONPATH=src python examples/quickstart.py --steps 20

Three small classifiers on scikit-learn's 8x8 digits (no download). ``Ensemble(members,
pdd=...)`` splits each member before its last ``nn.Linear`` and drops units of the stacked
hidden features ``[K, B, C]`` with Priority Diversified Dropouts (Algorithm 1, eq. 2);
``deg_penalty`` runs each member once, through PDD, and returns each member's loss and the
Dispersed Ensemble Gradients penalty (eq. 3), added with lambda = 0.01 (eq. 4). Prints the
loss as it trains, then the ensemble's test accuracy and ambiguity entropy (eq. 5).
"""

from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor, nn

from ensemble_diversity import Ensemble, PriorityDiversifiedDropout, ambiguity_entropy, deg_penalty


def member(hidden: int = 64) -> nn.Module:
    """One classifier: 64 pixels -> ``hidden`` ReLU units (where PDD acts) -> 10 classes (its head, the last nn.Linear)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def digits(seed: int) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Train and test images ``[N, 1, 8, 8]`` in [0, 1] with their labels ``[N]``: a stratified 75/25 split."""
    data = load_digits()
    images, labels = torch.tensor(data.images / 16.0, dtype=torch.float32)[:, None], torch.tensor(data.target)
    train, test = train_test_split(torch.arange(len(labels)), test_size=0.25, stratify=data.target, random_state=seed)
    return (images[train], labels[train]), (images[test], labels[test])


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="SGD steps (default: %(default)s)")
    parser.add_argument("--members", type=int, default=3, help="K (default: %(default)s)")
    parser.add_argument("--deg-lambda", type=float, default=0.01, help="lambda of eq. 4 (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    (x, y), (x_test, y_test) = digits(args.seed)
    ensemble = Ensemble([member() for _ in range(args.members)], pdd=PriorityDiversifiedDropout(args.members))
    optimizer = torch.optim.SGD(ensemble.parameters(), lr=0.05, momentum=0.9)
    for step in range(1, args.steps + 1):
        batch = torch.randint(len(y), (64,))
        out = deg_penalty(ensemble, x[batch], y[batch])  # one forward per member through PDD; eq. 3
        loss = out.losses.mean() + args.deg_lambda * out.penalty  # eq. 4
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == args.steps:
            print(f"step {step}: members' CE {out.losses.mean().item():.3f}, DEG penalty {out.penalty.item():.3f}")

    ensemble.eval()  # PDD is off in eval mode: each member runs whole
    with torch.no_grad():
        accuracy = (ensemble(x_test).argmax(dim=-1) == y_test).float().mean().item()  # averaged probabilities
        entropy = ambiguity_entropy(ensemble.member_logits(x_test), y_test).item()
    print(f"test accuracy {100 * accuracy:.2f}% ({len(y_test)} images), ambiguity entropy E (eq. 5) {entropy:.4f}")
    print(f"PDD priority counts (member x interval): {ensemble.pdd.priority_counts.tolist()}")
    return {"test_accuracy": accuracy, "ambiguity_entropy": entropy, "last_loss": loss.item()}


if __name__ == "__main__":
    main()
