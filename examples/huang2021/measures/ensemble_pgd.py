"""The harness's plain-torch attacks on a whole ensemble, through the library's `ensemble_diversity.attacks`.

One implementation: the objectives, the PGD runs and their bookkeeping are the library's
(:func:`ensemble_diversity.attacks.pgd`, :func:`~ensemble_diversity.attacks.evaluate_robustness`);
this module maps the harness's names onto them, for the main command's robustness column and
the strong protocol (:mod:`.robustness`). The attacked decision is the paper's ensemble, the
members' **averaged probabilities**; what an attack climbs is its *objective*, a per-image loss of
the members' logits ``[K, B, L]``:

- ``"logits"``: cross-entropy of the averaged logits (the library's ``"pgd"``);
- ``"log-probabilities"``: cross-entropy of the log of the averaged probabilities (``"pgd-probs"``);
- ``"mora"``: the MORA-style mix of the ensemble's output and its reweighted members, one run
  per mixing scale (:func:`~ensemble_diversity.attacks.mora_loss`, ``"mora"``).

Each run starts from a random point of the eps-ball and takes ``steps`` steps of
``2.5 eps / steps``, projected on the ball and on [0, 1]; an image counts as broken at the first
iterate the ensemble misclassifies (that iterate is kept), and a later run attacks only the
images no earlier run broke. No ART: the main command needs only torch.
"""

from __future__ import annotations

import functools
from typing import Literal

import torch
from torch import Tensor, nn

from ensemble_diversity.attacks import (
    MORA_SCALES,
    Loss,
    as_members,
    averaged_logits_loss,
    averaged_probabilities_loss,
    evaluate_robustness,
    log_averaged_probabilities,
    mora_loss,
    pgd,
)

from ..data.splits import Split, batch_images

__all__ = [
    "MORA_SCALES",
    "OBJECTIVES",
    "Loss",
    "Objective",
    "attack_losses",
    "averaged_logits_loss",
    "averaged_probabilities_loss",
    "ensemble_pgd",
    "log_averaged_probabilities",
    "mora_loss",
    "robust_correct",
]

Objective = Literal["logits", "log-probabilities", "mora"]
OBJECTIVES: tuple[Objective, ...] = ("logits", "log-probabilities", "mora")


def attack_losses(objective: Objective, restarts: int) -> list[Loss]:
    """The loss of each run of an attack: ``restarts`` runs of the objective's loss; MORA's one run per scale of :data:`MORA_SCALES`."""
    if objective == "logits":
        return [averaged_logits_loss] * restarts
    if objective == "log-probabilities":
        return [averaged_probabilities_loss] * restarts
    if objective == "mora":
        return [functools.partial(mora_loss, scale=scale) for scale in MORA_SCALES]
    raise ValueError(f"Expected objective to be one of {list(OBJECTIVES)}, but got {objective!r}")


def ensemble_pgd(
    members: nn.ModuleList,
    images: Tensor,
    labels: Tensor,
    eps: float,
    *,
    steps: int,
    losses: list[Loss],
    norm: Literal["inf", "2"] = "inf",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Adversarial versions ``[B, C, H, W]`` of ``images`` (in [0, 1]) against the ensemble of ``members`` (eval mode).

    One library :func:`~ensemble_diversity.attacks.pgd` run per loss of ``losses``
    (:func:`attack_losses`), each from a new random start on the images no earlier run broke.
    ``labels`` ``[B]``: the true labels. An image the ensemble already misclassifies is returned
    unchanged; so is one no run breaks.
    """
    # Checked here too: the library checks a run's settings only when it has images to attack.
    if steps < 1 or not losses:
        raise ValueError(f"Expected steps >= 1 and at least one loss, but got steps={steps} and {len(losses)} losses")
    if norm not in ("inf", "2"):
        raise ValueError(f"Expected norm to be 'inf' or '2', but got {norm!r}")
    ensemble = as_members(members)
    adversarial = images.detach().clone()
    with ensemble.evaluating(), torch.no_grad():
        robust = ensemble.correct(ensemble.check(images, labels), labels)
    for loss in losses:
        active = robust.nonzero().squeeze(1)  # indices into the batch of the images this run still attacks
        if len(active) == 0:
            break
        found = pgd(ensemble, images[active], labels[active], eps=eps, norm=norm, loss=loss, steps=steps, generator=generator)
        with ensemble.evaluating(), torch.no_grad():
            fooled = ~ensemble.correct(ensemble(found), labels[active])
        adversarial[active[fooled]] = found[fooled]
        robust[active[fooled]] = False
    return adversarial


def robust_correct(
    members: nn.ModuleList,
    split: Split,
    eps: float,
    *,
    steps: int,
    restarts: int = 1,
    objective: Objective = "logits",
    batch_size: int = 500,
    seed: int = 0,
) -> Tensor:
    """``[N]`` bool on the CPU: the ensemble classifies image n correctly before and after ``restarts`` runs of PGD on ``objective``.

    The library's :func:`~ensemble_diversity.attacks.evaluate_robustness` with the one attack
    (``"pgd"``, ``"pgd-probs"`` or ``"mora"``, MORA's runs being its scales), from one generator
    seeded with ``seed``.
    """
    attack = {"logits": "pgd", "log-probabilities": "pgd-probs", "mora": "mora"}[objective]
    # The larger data sets keep their images as uint8; the attacks take floats in [0, 1].
    images = batch_images(split.images, torch.arange(len(split.labels), device=split.labels.device))
    result = evaluate_robustness(
        members, images, split.labels, eps=eps, attacks=[attack], steps=steps, restarts=1 if objective == "mora" else restarts,
        batch_size=batch_size, seed=seed,
    )  # fmt: skip
    return result.robust[0]
