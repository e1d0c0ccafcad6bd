"""White-box and transfer attacks on a whole ensemble, through the Adversarial Robustness Toolbox (ART).

Two protocols attack the same ensembles (Huang et al., AAAI 2021, "Attack Methods"; Tables 2-6):

- ``paper``: what the authors' code (github.com/ALIS-Lab/AAAI2021-PDD, ``whitebox_test.py``)
  runs: the attacked model outputs the members' **averaged probabilities** with the loss
  ``NLL(log p)``; labels are the model's own predictions (ART's ``generate(x)`` without ``y``);
  FGSM with no random start; BIM and PGD as ART's PGD with step eps/10 and 10 iterations, PGD
  with one random start; JSMA with theta 0.1 and gamma as the parameter; C&W L2 whose margin is
  computed on the averaged probabilities (ART's C&W reads the model's output as ``Z``).
- ``strong``: with the true labels, in sequence, each attack on the images every earlier one
  failed on (as AutoAttack runs its attacks): PGD with 100 steps of 2.5 eps / steps (Madry et
  al. 2018) and 5 random restarts on the members' **averaged logits**, the same PGD on the log
  of their **averaged probabilities** (what the ensemble decides on), a MORA-style attack on
  the **members** with per-member reweighting (Yu, Gao and Xu 2022), all three in plain torch
  (:mod:`.ensemble_pgd`), optionally the library's APGD with the CE and the DLR loss of the
  averaged logits (``apgd-ce``, ``apgd-dlr``: :data:`LIBRARY_APGD`), then AutoAttack (Croce &
  Hein 2020, standard version as closely as ART allows, see :func:`auto_attack`) on the
  ensemble's own logits, the **log of its averaged probabilities**: every attack decides which images are still robust, and which iterate broke
  one, by what the ensemble decides on, never by the argmax of another output.

Every ART attack takes and returns numpy arrays ``[B, 1, 8, 8]`` in [0, 1] (ART's interface).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from art.attacks.evasion import (
    AutoProjectedGradientDescent,
    CarliniL2Method,
    FastGradientMethod,
    ProjectedGradientDescent,
    SaliencyMapMethod,
    SquareAttack,
)
from art.estimators.classification import PyTorchClassifier
from torch import Tensor, nn

from ensemble_diversity import Ensemble

from ..measures.ensemble_pgd import log_averaged_probabilities
from ..settings import AT_LEAST_ONE, flag

Output = Literal["probabilities", "log-probabilities"]

PAPER_ATTACKS = ("fgsm", "bim", "pgd", "jsma", "cw")
"""Table 2's white-box attacks, in its row order."""
STRONG_ATTACKS = ("pgd-strong", "pgd-probs", "mora", "apgd-ce", "apgd-dlr", "autoattack")
"""The strong protocol's attacks, in the order they run, at the L_inf epsilons of the paper protocol's FGSM, BIM and PGD."""
STRONG_OBJECTIVES = {"pgd-strong": "logits", "pgd-probs": "log-probabilities", "mora": "mora"}
"""The plain-torch strong attacks and the objective each climbs (:mod:`.ensemble_pgd`)."""
LIBRARY_APGD = ("apgd-ce", "apgd-dlr")
"""The strong attacks that are the library's APGD (:func:`ensemble_diversity.attacks.evaluate_robustness`'s names):
optional, left out of ``examples/evaluate.py``'s default list, whose last stage is ART's AutoAttack (the committed reports' protocol)."""
TRANSFER_ATTACKS = ("fgsm", "pgd", "jsma")
"""Table 4's black-box rows, crafted on a surrogate with the paper protocol."""

PARAMETER = {"fgsm": "eps", "bim": "eps", "pgd": "eps", "jsma": "gamma", "cw": "c", "pgd-strong": "eps", "pgd-probs": "eps", "mora": "eps", "apgd-ce": "eps", "apgd-dlr": "eps", "autoattack": "eps"}
"""What each attack's parameter (Table 2's "Para.") is: L_inf epsilon, JSMA's fraction of features, C&W's initial constant."""


PAPER_GROUP = "paper protocol (defaults: the paper's parameters for the data set)"
STRONG_GROUP = "strong protocol (true labels; each attack on the images the earlier ones failed on)"


@dataclass(frozen=True, kw_only=True)
class AttackSettings:
    """Everything besides the parameter that decides an attack (``examples/evaluate.py``'s flags, stored in each result)."""

    steps: int = flag(10, "BIM and PGD iterations of the paper protocol, each a step of eps/10 (the authors' code)", check=AT_LEAST_ONE, group=PAPER_GROUP)
    jsma_theta: float = flag(0.1, "JSMA's change per feature", group=PAPER_GROUP)
    cw_steps: int = flag(1000, "C&W iterations per constant", check=AT_LEAST_ONE, per_dataset={"digits": 20}, group=PAPER_GROUP, type=int)
    cw_lr: float = flag(0.001, "C&W learning rate", shown="0.001, the paper; the authors' code: 0.01", group=PAPER_GROUP)
    cw_search_steps: int = flag(
        5, "C&W binary search steps on c (5: the authors' code)", check=AT_LEAST_ONE, per_dataset={"digits": 2}, group=PAPER_GROUP, type=int
    )
    cw_confidence: float = flag(0.01, "C&W confidence kappa (the authors' code)", group=PAPER_GROUP)
    strong_steps: int = flag(100, "PGD, MORA and APGD iterations (per restart, per MORA scale)", check=AT_LEAST_ONE, group=STRONG_GROUP)
    strong_restarts: int = flag(5, "PGD and library APGD random restarts (each objective)", check=AT_LEAST_ONE, group=STRONG_GROUP)
    autoattack_targets: int = flag(
        9, "AutoAttack's APGD-T target classes, those with the highest clean logits (9: the standard version)", check=AT_LEAST_ONE, group=STRONG_GROUP
    )
    square_queries: int = flag(
        5000, "Square attack queries (5000: standard AutoAttack)", check=AT_LEAST_ONE, per_dataset={"digits": 1000}, group=STRONG_GROUP, type=int
    )
    batch_size: int = flag(128, "images per attack batch; the attacks act per image, so this sets speed and memory only", check=AT_LEAST_ONE, group="run")

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


class _LogAveragedProbabilities(nn.Module):
    """The ensemble's logits: ``[B, *input_shape]`` -> the log of the members' averaged probabilities ``[B, L]``.

    Their softmax is the averaged probabilities and their argmax the ensemble's decision, so an
    attack that needs logits (DLR, a logit margin) and decides success by their argmax (ART's
    APGD and Square do, per image) decides as the ensemble does. The members' averaged logits
    would not: members' logits [0, 20, 0], [5, 0, 0], [5, 0, 0] average to class 1, their
    probabilities [0.658, 0.338, 0.004] to class 0.
    """

    def __init__(self, members: nn.ModuleList) -> None:
        super().__init__()
        self.ensemble = Ensemble(members)

    def forward(self, x: Tensor) -> Tensor:
        return log_averaged_probabilities(self.ensemble.member_logits(x))


def ensemble_classifier(
    members: nn.ModuleList, output: Output, input_shape: tuple[int, ...], device: torch.device
) -> PyTorchClassifier:
    """ART's view of the whole ensemble: ``[B, *input_shape]`` in [0, 1] -> ``[B, L]``.

    ``output="probabilities"``: the members' averaged softmax (the paper's ensemble, what the
    authors attack), loss NLL of its log. ``output="log-probabilities"``: their log, the
    ensemble's logits (:class:`_LogAveragedProbabilities`), loss cross-entropy (the same NLL,
    as the log-sum-exp of these logits is 0), for attacks that need logits; its gradient stays
    finite where a probability underflows. Both decide by the ensemble's decision.
    """
    if output not in ("probabilities", "log-probabilities"):
        raise ValueError(f"Expected output to be 'probabilities' or 'log-probabilities', but got {output!r}")
    model: nn.Module = Ensemble(members) if output == "probabilities" else _LogAveragedProbabilities(members)
    loss: nn.Module = _LogProbabilityNLL() if output == "probabilities" else nn.CrossEntropyLoss()
    return PyTorchClassifier(
        model=model.to(device).eval(),
        loss=loss,
        input_shape=tuple(input_shape),
        nb_classes=members[0].head.out_features,
        clip_values=(0.0, 1.0),
        device_type="gpu" if device.type == "cuda" else "cpu",
    )


def craft(
    attack: str,
    parameter: float,
    members: nn.ModuleList,
    images: np.ndarray,
    labels: np.ndarray | None,
    settings: AttackSettings,
    *,
    device: torch.device,
    norm: float = np.inf,
) -> np.ndarray:
    """Adversarial versions of ``images`` ``[B, C, H, W]`` against the ensemble of ``members`` (on ``device``).

    The paper protocol's attacks get the averaged probabilities (the authors' code), AutoAttack
    their log, the ensemble's logits (:func:`ensemble_classifier`). ``labels`` ``[B]``: None
    lets ART take the classifier's predictions (the paper protocol); the true labels for
    AutoAttack. ``norm`` applies to FGSM, BIM, PGD and AutoAttack (np.inf or 2). The strong
    protocol's PGD and MORA are :mod:`.ensemble_pgd`'s, not ART's.
    """
    x = images.astype(np.float32)
    batch = settings.batch_size
    classifier = ensemble_classifier(members, "log-probabilities" if attack == "autoattack" else "probabilities", x.shape[1:], device)
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
    """AutoAttack's standard version (Croce & Hein 2020) from ART's attacks, FAB-T left out.

    ``classifier``: the ensemble's logits, ``ensemble_classifier(..., "log-probabilities")``: ART's
    attacks and :class:`_Unbroken` judge an image robust by their argmax, which must be the
    ensemble's decision (with the averaged logits, an image they misclassify but the ensemble
    does not would never be attacked, and a candidate fooling only them would end the sequence).

    Standard AutoAttack runs, each on the images that all earlier attacks failed on and each
    from the clean image: APGD-CE (100 iterations, no restart), APGD-T (DLR loss, targeted in
    turn at the 9 classes with the highest clean logits after the top one, 100 iterations
    each), FAB-T and Square (5000 queries); an image falls when an attack makes the model
    misclassify it. This runs that sequence with ART's ``AutoProjectedGradientDescent``
    (``settings.strong_steps`` iterations, 1 restart, initial step 2 eps) and ``SquareAttack``
    (``settings.square_queries`` queries) and ``settings.autoattack_targets`` targets. ART has
    no FAB, so FAB-T is missing. ART's own ``AutoAttack`` wrapper is not used: it targets every
    class in index order (99 passes for 100 classes) and counts a targeted pass as successful
    only when the image lands on the target, not when it is misclassified.
    """
    batch = settings.batch_size
    unbroken = _Unbroken(classifier, images, labels, batch)

    def apgd(loss_type: str, targeted: bool) -> AutoProjectedGradientDescent:
        return AutoProjectedGradientDescent(
            classifier,
            norm=norm,
            eps=eps,
            eps_step=2 * eps,
            max_iter=settings.strong_steps,
            targeted=targeted,
            nb_random_init=1,
            batch_size=batch,
            loss_type=loss_type,
            verbose=False,
        )

    unbroken.attack(apgd("cross_entropy", targeted=False))
    # The clean image is classified correctly wherever APGD-T runs, so the top logit is the
    # label and the targets are the next ones in order.
    ranked = np.argsort(-unbroken.logits, axis=1, kind="stable")
    targeted = apgd("difference_logits_ratio", targeted=True)
    for rank in range(1, min(settings.autoattack_targets, ranked.shape[1] - 1) + 1):
        unbroken.attack(targeted, ranked[:, rank])
    unbroken.attack(SquareAttack(classifier, norm=norm, eps=eps, max_iter=settings.square_queries, nb_restarts=1, batch_size=batch, verbose=False))
    return unbroken.x_adv


class _Unbroken:
    """A sequence of attacks on the same images: which are still classified correctly, and the adversarial images so far.

    ``images`` ``[B, C, H, W]``; ``labels`` ``[B]``, or None for the classifier's predictions.
    An image counts as broken once it is misclassified, whatever an attack aimed at, by the
    argmax of ``classifier``'s output: the ensemble's decision when that output is the log of
    the averaged probabilities (:func:`ensemble_classifier`).
    """

    def __init__(self, classifier: PyTorchClassifier, images: np.ndarray, labels: np.ndarray | None, batch_size: int) -> None:
        self.classifier = classifier
        self.batch_size = batch_size
        self.x = images.astype(np.float32, copy=False)
        self.logits = classifier.predict(self.x, batch_size=batch_size)
        """``[B, L]``: the clean images' outputs."""
        predictions = self.logits.argmax(1)
        self.labels = predictions if labels is None else np.asarray(labels)
        self.robust = predictions == self.labels
        self.x_adv = self.x.copy()

    def attack(self, attack: Any, y: np.ndarray | None = None) -> None:
        """Run ``attack`` from the clean images still robust; keep its image wherever it misclassifies.

        ``y`` ``[B]``: what ``attack.generate`` gets (default the labels; the targets of a targeted attack).
        """
        index = np.flatnonzero(self.robust)
        if len(index) == 0:
            return
        candidates = attack.generate(x=self.x[index], y=(self.labels if y is None else y)[index])
        fooled = self.classifier.predict(candidates, batch_size=self.batch_size).argmax(1) != self.labels[index]
        self.x_adv[index[fooled]] = candidates[fooled]
        self.robust[index[fooled]] = False
