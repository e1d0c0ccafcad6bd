"""Adversarial training's inner loop: FGSM / PGD examples of the ensemble, crafted on each batch.

The paper combines PDD with adversarial training, "AdvT_FGSM" and "AdvT_PGD" (Table 6,
section "Adversarial Training"), which "augments the training data with adversarial examples
in each mini-batch" (Goodfellow et al. 2015), but states no crafting parameter, and the
authors' public code (ALIS-Lab/AAAI2021-PDD) has no adversarial-training script. The paper
sets its attacks "following the experimental settings in (Pang et al. 2019)", so the defaults
here are the adversarial training of that paper's code (P2333/Adaptive-Diversity-Promoting,
``advtrain_cifar10.py``); every one is a flag of ``examples/train.py`` (:class:`~.config.AdversarialTraining`):

- the attacked model is the *ensemble*: the members' softmax probabilities averaged
  (``keras.layers.Average()`` over the members there; the paper's ensemble, and the model
  the authors' ``whitebox_test.py`` attacks); the attack loss is the CE of that average;
- L_inf bound eps drawn per batch uniformly from [0.01, 0.05] (``tf.random_uniform((), 0.01,
  0.05)`` there);
- FGSM: one step of size eps, no random start; PGD: 10 steps of eps / 10 from a uniform
  random start in the eps-ball (cleverhans ``MadryEtAl`` with ``nb_iter=10``,
  ``eps_iter=eps/10``, its default ``rand_init``; the authors' ``whitebox_test.py`` attacks
  with the same step, iterations and one random start);
- the attack's labels are the ensemble's own predictions, not the true labels (cleverhans
  and ART both do this when no labels are given, to avoid "label leaking", Kurakin et al. 2017);
- pixels stay in [0, 1] (the paper normalises intensities to 1);
- the crafting runs in the network's training mode (the attack is part of the Keras training
  graph there), so BatchNorm uses the batch's statistics and PDD drops units while crafting;
  the crafting passes leave every buffer (BatchNorm running statistics, PDD's priority
  counts) as it was, a choice made here so that only the training passes count.

Randomness (eps, random start, PDD masks) comes from the global torch RNG, which the
checkpoints save, so ``--resume`` stays exact. Gradients of the crafting flow to the input
only, never into the parameters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch
from torch import Tensor

from ensemble_diversity import Ensemble
from ensemble_diversity.attacks import averaged_probabilities_loss

from .config import AdversarialTraining
from .methods import Attack


def ensemble_cross_entropy_of_average(logits: Tensor, labels: Tensor) -> Tensor:
    """Scalar: CE of the ensemble's prediction, the members' softmax probabilities ``[K, B, L]`` averaged.

    The batch mean of the library's :func:`ensemble_diversity.attacks.averaged_probabilities_loss`,
    in float32 (under bf16 autocast the logits arrive in bf16).
    """
    return averaged_probabilities_loss(logits.float(), labels).mean()


def craft_adversarial(
    attack: Attack, ensemble: Ensemble, images: Tensor, labels: Tensor, settings: AdversarialTraining
) -> Tensor:
    """Adversarial examples ``[B, ...]`` of ``images`` in [0, 1], within the batch's eps in L_inf; detached.

    ``ensemble``: the members, with the method's PDD (``Ensemble(members, pdd=pdd)``) or none.
    """
    low, high = settings.eps[0], settings.eps[-1]
    eps = low + (high - low) * torch.rand((), device=images.device)
    with _crafting_mode(ensemble, settings.craft_mode), torch.enable_grad():
        if settings.labels == "predicted":
            with torch.no_grad():
                labels = ensemble(images).argmax(-1)  # the members' averaged probabilities
        if attack == "fgsm":
            return _ascend(ensemble, images, images, labels, eps, step=eps, steps=1)
        start = images
        if settings.random_start:
            start = (images + eps * (2 * torch.rand_like(images) - 1)).clamp(0.0, 1.0)
        step = eps / 10 if settings.step_size is None else settings.step_size
        return _ascend(ensemble, images, start, labels, eps, step=step, steps=settings.steps)


def _ascend(
    ensemble: Ensemble,
    images: Tensor,
    start: Tensor,
    labels: Tensor,
    eps: Tensor,
    *,
    step: Tensor | float,
    steps: int,
) -> Tensor:
    """``steps`` signed-gradient ascent steps on the ensemble's CE, each projected onto the eps-ball and [0, 1].

    Not the library's :func:`ensemble_diversity.attacks.pgd`, whose loss it shares: that is an
    evaluation attack (eval mode, each image kept at the first iterate that fools the ensemble),
    while training-time crafting takes every step, in the crafting mode (training by default,
    PDD dropping units), with the batch's eps a tensor drawn on the device.
    """
    adversarial = start.detach()
    for _ in range(steps):
        adversarial.requires_grad_(True)
        loss = ensemble_cross_entropy_of_average(ensemble.member_logits(adversarial), labels)
        # Differentiating with respect to the input alone leaves the parameters' .grad untouched.
        (grad,) = torch.autograd.grad(loss, adversarial)
        adversarial = adversarial.detach() + step * grad.sign()
        adversarial = torch.minimum(torch.maximum(adversarial, images - eps), images + eps).clamp(0.0, 1.0)
    return adversarial.detach()


@contextlib.contextmanager
def _crafting_mode(ensemble: Ensemble, mode: Literal["train", "eval"]) -> Iterator[None]:
    """Members and PDD in ``mode`` while crafting; afterwards every module's mode and every buffer are as before."""
    training = {module: module.training for module in ensemble.modules()}
    buffers = [buffer.clone() for buffer in ensemble.buffers()]
    ensemble.train(mode == "train")
    try:
        yield
    finally:
        for module, was_training in training.items():
            module.training = was_training
        with torch.no_grad():
            for buffer, saved in zip(ensemble.buffers(), buffers):
                buffer.copy_(saved)
