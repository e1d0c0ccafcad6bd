"""``ensemble_diversity.attacks`` on a CUDA device: every attack runs there, results agree between
an ``Ensemble`` and its list of models, and a model left on the CPU is named."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ensemble_diversity import Ensemble
from ensemble_diversity.attacks import STRONG_ATTACKS, evaluate_robustness

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_every_attack_runs_on_the_device_of_the_images():
    torch.manual_seed(0)
    models = [nn.Sequential(nn.Flatten(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 5)).cuda() for _ in range(3)]
    images, labels = torch.rand(64, 3, 4, 4, device="cuda"), torch.randint(0, 5, (64,), device="cuda")
    result = evaluate_robustness(models, images, labels, eps=[0.05, 0.3], steps=5, sequential=False, keep_adversarial=True)
    again = evaluate_robustness(Ensemble(models), images, labels, eps=[0.05, 0.3], steps=5, sequential=False, keep_adversarial=True)
    assert result.adversarial.device.type == "cuda" and result.broken.device.type == "cpu"
    assert torch.equal(result.broken, again.broken) and torch.equal(result.adversarial, again.adversarial)
    assert result.attacks == STRONG_ATTACKS and result.broken[1].any(dim=1).all()  # each attack breaks something at 0.3
    assert ((result.adversarial - images).abs().amax(dim=(1, 2, 3, 4)) <= torch.tensor([0.05, 0.3], device="cuda") + 1e-6).all()


def test_a_model_left_on_the_cpu_is_named():
    models = [nn.Linear(4, 3).cuda(), nn.Linear(4, 3)]
    with pytest.raises(ValueError, match="models\\[1\\]"):
        evaluate_robustness(models, torch.rand(2, 4, device="cuda"), torch.tensor([0, 1], device="cuda"), eps=0.1)


def test_labels_on_another_device_than_the_images_are_refused():
    models = [nn.Linear(4, 3).cuda() for _ in range(2)]
    with pytest.raises(ValueError, match="`labels` on the device of `images` \\(cuda:0\\), but it is on cpu"):
        evaluate_robustness(models, torch.rand(2, 4, device="cuda"), torch.tensor([0, 1]), eps=0.1)
