"""White-box and transfer attacks on a whole ensemble, through the Adversarial Robustness Toolbox (ART).

Two protocols attack the same ensembles (Huang et al., AAAI 2021, "Attack Methods"; Tables 2-6):

- ``paper``: what the authors' code (github.com/ALIS-Lab/AAAI2021-PDD, ``whitebox_test.py``)
  runs: the attacked model outputs the members' **averaged probabilities** with the loss
  ``NLL(log p)``; labels are the model's own predictions (ART's ``generate(x)`` without ``y``);
  FGSM with no random start; BIM and PGD as ART's PGD with step eps/10 and 10 iterations, PGD
  with one random start; JSMA with theta 0.1 and gamma as the parameter; C&W L2 whose margin is
  computed on the averaged probabilities (ART's C&W reads the model's output as ``Z``).
- ``strong``: PGD with 100 steps of 2.5 eps / steps (Madry et al. 2018) and 5 random restarts,
  and AutoAttack (Croce & Hein 2020, standard version as closely as ART allows, see
  :func:`auto_attack`), both on the members' **averaged logits** with the true labels.

Every attack takes and returns numpy arrays ``[B, 1, 8, 8]`` in [0, 1] (ART's interface).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from art.attacks.evasion import (
    AutoAttack,
    AutoProjectedGradientDescent,
    CarliniL2Method,
    FastGradientMethod,
    ProjectedGradientDescent,
    SaliencyMapMethod,
    SquareAttack,
)
from art.estimators.classification import PyTorchClassifier
from torch import Tensor, nn

from ensemble_diversity.ensemble import Ensemble

Output = Literal["probabilities", "logits"]

PAPER_ATTACKS = ("fgsm", "bim", "pgd", "jsma", "cw")
"""Table 2's white-box attacks, in its row order."""
STRONG_ATTACKS = ("pgd-strong", "autoattack")
"""The strong protocol's attacks, run at the L_inf epsilons of the paper protocol's FGSM, BIM and PGD."""
TRANSFER_ATTACKS = ("fgsm", "pgd", "jsma")
"""Table 4's black-box rows, crafted on a surrogate with the paper protocol."""

PARAMETER = {"fgsm": "eps", "bim": "eps", "pgd": "eps", "jsma": "gamma", "cw": "c", "pgd-strong": "eps", "autoattack": "eps"}
"""What each attack's parameter (Table 2's "Para.") is: L_inf epsilon, JSMA's fraction of features, C&W's initial constant."""


@dataclass(frozen=True)
class AttackSettings:
    """Everything besides the parameter that decides an attack (command-line flags, stored in the results)."""

    steps: int = 10
    """BIM and PGD iterations of the paper protocol (each step eps / 10, as in the authors' code)."""
    jsma_theta: float = 0.1
    cw_steps: int = 1000
    cw_lr: float = 0.001
    cw_search_steps: int = 5
    cw_confidence: float = 0.01
    strong_steps: int = 100
    strong_restarts: int = 5
    square_queries: int = 5000
    batch_size: int = 64

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _LogProbabilityNLL(nn.NLLLoss):
    """The authors' attack loss on averaged probabilities ``[B, L]``: NLL of their log.

    An ``nn.NLLLoss`` so that ART hands it class indices, not one-hot labels. The clamp keeps
    the gradient finite where a probability underflows to 0 (the authors' ``torch.log`` would
    give -inf there).
    """

    def forward(self, probabilities: Tensor, labels: Tensor) -> Tensor:
        return F.nll_loss(torch.log(probabilities.clamp_min(1e-30)), labels)


def ensemble_classifier(
    members: nn.ModuleList, output: Output, input_shape: tuple[int, ...], device: torch.device
) -> PyTorchClassifier:
    """ART's view of the whole ensemble: ``[B, *input_shape]`` in [0, 1] -> ``[B, L]``.

    ``output="probabilities"``: the members' averaged softmax (the paper's ensemble, what the
    authors attack), loss NLL of its log. ``output="logits"``: the members' averaged logits,
    loss cross-entropy, for attacks that need logits (DLR, a logit margin) and whose gradients
    a saturated softmax would not shrink.
    """
    ensemble = Ensemble(members, combine=output).to(device).eval()
    loss: nn.Module = _LogProbabilityNLL() if output == "probabilities" else nn.CrossEntropyLoss()
    return PyTorchClassifier(
        model=ensemble,
        loss=loss,
        input_shape=tuple(input_shape),
        nb_classes=members[0].head.out_features,
        clip_values=(0.0, 1.0),
        device_type="gpu" if device.type == "cuda" else "cpu",
    )


def craft(
    attack: str,
    parameter: float,
    classifier: PyTorchClassifier,
    images: np.ndarray,
    labels: np.ndarray | None,
    settings: AttackSettings,
    *,
    norm: float = np.inf,
) -> np.ndarray:
    """Adversarial versions of ``images`` ``[B, C, H, W]`` against ``classifier``.

    ``labels`` ``[B]``: None lets ART take the classifier's predictions (the paper protocol);
    the true labels for the strong protocol. ``norm`` applies to FGSM, BIM, PGD and the strong
    attacks (np.inf or 2).
    """
    x = images.astype(np.float32)
    batch = settings.batch_size
    if attack == "fgsm":
        art_attack: Any = FastGradientMethod(classifier, norm=norm, eps=parameter, num_random_init=0, batch_size=batch)
    elif attack in ("bim", "pgd"):
        art_attack = ProjectedGradientDescent(
            classifier,
            norm=norm,
            eps=parameter,
            eps_step=parameter / 10,
            max_iter=settings.steps,
            num_random_init=1 if attack == "pgd" else 0,
            batch_size=batch,
            verbose=False,
        )
    elif attack == "jsma":
        art_attack = SaliencyMapMethod(classifier, theta=settings.jsma_theta, gamma=parameter, batch_size=batch, verbose=False)
    elif attack == "cw":
        art_attack = CarliniL2Method(
            classifier,
            confidence=settings.cw_confidence,
            learning_rate=settings.cw_lr,
            binary_search_steps=settings.cw_search_steps,
            max_iter=settings.cw_steps,
            initial_const=parameter,
            batch_size=batch,
            verbose=False,
        )
    elif attack == "pgd-strong":
        art_attack = ProjectedGradientDescent(
            classifier,
            norm=norm,
            eps=parameter,
            eps_step=2.5 * parameter / settings.strong_steps,
            max_iter=settings.strong_steps,
            num_random_init=settings.strong_restarts,
            batch_size=batch,
            verbose=False,
        )
    elif attack == "autoattack":
        return auto_attack(classifier, x, labels, parameter, settings, norm=norm)
    else:
        raise ValueError(f"Expected attack to be one of {list(PARAMETER)}, but got {attack!r}")
    return art_attack.generate(x=x, y=labels)


def auto_attack(
    classifier: PyTorchClassifier,
    images: np.ndarray,
    labels: np.ndarray | None,
    eps: float,
    settings: AttackSettings,
    *,
    norm: float = np.inf,
) -> np.ndarray:
    """AutoAttack's standard version (Croce & Hein 2020) built from ART's parts.

    Standard AutoAttack runs APGD-CE (100 iterations), APGD-T (DLR loss, targeted at 9
    classes, 100 iterations), FAB-T and Square (5000 queries), each on the images that all
    earlier attacks failed on. ART's ``AutoAttack`` with its default attack list differs (5
    restarts per APGD, DeepFool instead of FAB, Square with 5 restarts, no targeted pass), so
    this configures it: stage 1 is ``AutoAttack(targeted=True)`` over APGD-CE and APGD-DLR
    (1 restart each, initial step 2 eps as in APGD), which runs both untargeted and then
    both targeted at every other class (for 10 classes exactly APGD-T's 9 targets, plus an
    untargeted DLR and a targeted CE pass, which can only lower accuracy further); stage 2 is
    Square with ``settings.square_queries`` queries on the images stage 1 failed on. ART has
    no FAB, so FAB-T is missing.
    """
    x = images.astype(np.float32)
    batch = settings.batch_size

    def apgd(loss_type: str) -> AutoProjectedGradientDescent:
        return AutoProjectedGradientDescent(
            classifier,
            norm=norm,
            eps=eps,
            eps_step=2 * eps,
            max_iter=settings.strong_steps,
            nb_random_init=1,
            batch_size=batch,
            loss_type=loss_type,
            verbose=False,
        )

    gradient_stage = AutoAttack(
        classifier,
        norm=norm,
        eps=eps,
        eps_step=2 * eps,
        attacks=[apgd("cross_entropy"), apgd("difference_logits_ratio")],
        batch_size=batch,
        targeted=True,
    )
    x_adv = gradient_stage.generate(x=x, y=labels)
    # Stage 1 leaves an image unchanged when it found no adversarial example for it, or when
    # the image was misclassified to begin with (stage 2 checks that again and skips it).
    remaining = np.all(x_adv.reshape(len(x), -1) == x.reshape(len(x), -1), axis=1)
    if remaining.any():
        square = SquareAttack(classifier, norm=norm, eps=eps, max_iter=settings.square_queries, nb_restarts=1, batch_size=batch, verbose=False)
        square_stage = AutoAttack(classifier, norm=norm, eps=eps, eps_step=2 * eps, attacks=[square], batch_size=batch)
        stage_labels = None if labels is None else labels[remaining]
        x_adv[remaining] = square_stage.generate(x=x[remaining], y=stage_labels)
    return x_adv
