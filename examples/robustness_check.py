"""How robust is my ensemble? The library's strong check on two ensembles, with the public API of ensemble_diversity alone.

    PYTHONPATH=src python examples/robustness_check.py                       # baseline and PDD+DEG on digits, about a minute on a CPU
    PYTHONPATH=src python examples/robustness_check.py --attack-steps 100 --restarts 5

Trains three small classifiers on scikit-learn's 8x8 digits (no download) twice, once with the
cross-entropy alone and once with PDD + DEG (eq. 4, lambda = 0.01), from the same initial
weights and batches; then ``evaluate_robustness`` attacks each ensemble at each L_inf eps with
PGD on the averaged logits and on the log averaged probabilities, the MORA-style attack and
APGD (CE and DLR), each on the images the earlier ones failed on, and prints the accuracy after
each attack in turn and the worst case, judged by the ensemble's averaged probabilities.
"""

from __future__ import annotations

import argparse
import copy

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor, nn

from ensemble_diversity import Ensemble, PriorityDiversifiedDropout, deg_penalty
from ensemble_diversity.attacks import evaluate_robustness


def member() -> nn.Module:
    """64 pixels -> 64 ReLU units (where PDD acts) -> 10 classes."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def digits(seed: int) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Train and test images ``[N, 1, 8, 8]`` in [0, 1] with their labels ``[N]``: a stratified 75/25 split."""
    data = load_digits()
    images, labels = torch.tensor(data.images / 16.0, dtype=torch.float32)[:, None], torch.tensor(data.target)
    train, test = train_test_split(torch.arange(len(labels)), test_size=0.25, stratify=data.target, random_state=seed)
    return (images[train], labels[train]), (images[test], labels[test])


def train(ensemble: Ensemble, x: Tensor, y: Tensor, *, steps: int, deg_lambda: float, seed: int) -> Ensemble:
    """SGD on the members' CE, plus ``deg_lambda`` times the DEG penalty (eq. 4); the batches drawn from ``seed``."""
    optimizer = torch.optim.SGD(ensemble.parameters(), lr=0.05, momentum=0.9)
    batches = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = torch.randint(len(y), (64,), generator=batches)
        out = deg_penalty(ensemble, x[batch], y[batch])  # one forward per member (through PDD if any); eq. 3
        loss = out.losses.mean() + deg_lambda * out.penalty
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return ensemble.eval()


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-steps", type=int, default=600, help="SGD steps per ensemble (default: %(default)s)")
    parser.add_argument("--eps", type=float, nargs="+", default=[0.05, 0.1], help="L_inf radii (default: %(default)s)")
    parser.add_argument("--attack-steps", type=int, default=20, help="iterations per attack run (default: %(default)s)")
    parser.add_argument("--restarts", type=int, default=1, help="runs of each attack (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="attack only the first N test images (default: all 450)")
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    (x, y), (x_test, y_test) = digits(args.seed)
    x_test, y_test = x_test[: args.limit], y_test[: args.limit]
    members = [member() for _ in range(3)]
    ensembles = {
        "baseline": train(Ensemble(copy.deepcopy(members)), x, y, steps=args.train_steps, deg_lambda=0.0, seed=args.seed),
        "pdd+deg": train(
            Ensemble(copy.deepcopy(members), pdd=PriorityDiversifiedDropout(3)), x, y, steps=args.train_steps, deg_lambda=0.01, seed=args.seed
        ),
    }
    accuracy = {}
    for name, ensemble in ensembles.items():
        result = evaluate_robustness(ensemble, x_test, y_test, eps=args.eps, steps=args.attack_steps, restarts=args.restarts, seed=args.seed)
        print(f"{name}: {result.summary()}")
        accuracy[name] = [result.clean_accuracy, *result.accuracy.tolist()]
    return accuracy


if __name__ == "__main__":
    main()
