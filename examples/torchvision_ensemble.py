"""Three torchvision classifiers of different architectures as one PDD + DEG ensemble, and the paper's diversity metrics.

    PYTHONPATH=src python examples/torchvision_ensemble.py             # 20 steps on random 32x32 images, a minute on a CPU
    PYTHONPATH=src python examples/torchvision_ensemble.py --steps 2 --models resnet18,resnet34,resnet18

``Ensemble(models, pdd=...)`` splits each model before its last ``nn.Linear`` (DenseNet's
``classifier``, ShuffleNetV2's and a ResNet's ``fc``), so PDD (eq. 2) can drop units of their
stacked features ``[K, B, C]``: the models must give the same C (1024 here, 512 for ResNet-18/34). A few steps of eq. 4 with ``deg_penalty`` on random data, then, on a test
batch: ambiguity entropy (eq. 5) of the members' logits, the discrimination score (eq. 6) of
``ensemble.member_outputs(x).features`` and the angles between the members' input gradients
(Fig. 3) from ``member_input_gradients``.
"""

from __future__ import annotations

import argparse

import torch
import torchvision

from ensemble_diversity import (
    Ensemble,
    PriorityDiversifiedDropout,
    ambiguity_entropy,
    deg_penalty,
    discrimination_score,
    ensemble_cross_entropy,
    gradient_angles,
    member_input_gradients,
    member_inputs,
)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="densenet121,shufflenet_v2_x1_0,shufflenet_v2_x0_5", help="torchvision model builders, comma-separated (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=20, help="SGD steps (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16, help="(default: %(default)s)")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    names = args.models.split(",")
    models = [torchvision.models.get_model(name, weights=None, num_classes=10) for name in names]
    ensemble = Ensemble(models, pdd=PriorityDiversifiedDropout(len(models)))
    print(f"members {names}, split before {ensemble.heads}")
    optimizer = torch.optim.SGD(ensemble.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.rand(args.batch_size, 3, 32, 32), torch.randint(0, 10, (args.batch_size,))  # your data loader
    for step in range(1, args.steps + 1):
        out = deg_penalty(ensemble, x, y)  # each member once, through PDD; eq. 3
        loss = out.losses.mean() + 0.01 * out.penalty  # eq. 4, lambda = 0.01
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        print(f"step {step}: members' CE {out.losses.mean().item():.3f}, DEG penalty {out.penalty.item():.3f}")

    ensemble.eval()
    x_test, y_test = torch.rand(args.batch_size, 3, 32, 32), torch.randint(0, 10, (args.batch_size,))
    inputs = member_inputs(x_test, len(models))  # [K, B, 3, 32, 32]: one input per member, one backward pass
    outputs = ensemble.member_outputs(inputs, per_member=True)  # features [K, B, C], logits [K, B, 10]
    losses = ensemble_cross_entropy(outputs.logits, y_test, member_reduction="none")  # [K]
    grads = member_input_gradients(losses, inputs, create_graph=False, per_member=True)  # [K, B, 3, 32, 32]
    metrics = {
        "ambiguity_entropy": ambiguity_entropy(outputs.logits.detach(), y_test).item(),
        "discrimination_score": discrimination_score(outputs.features.detach()).mean().item(),
        "gradient_angle_degrees": gradient_angles(grads).mean().item(),
    }
    print(f"E (eq. 5) {metrics['ambiguity_entropy']:.4f}, mean L_F (eq. 6) {metrics['discrimination_score']:.4f}, "
          f"mean gradient angle (Fig. 3) {metrics['gradient_angle_degrees']:.2f} degrees, on {len(y_test)} test images")  # fmt: skip
    return metrics


if __name__ == "__main__":
    main()
