"""How robust is my ensemble? White-box attacks on a whole ensemble, and the strong, ensemble-aware evaluation.

Every attack is a function of the members' logits ``[K, B, L]``, so an
:class:`~ensemble_diversity.Ensemble`, a list of models and your own function share one code
path (:func:`as_members`); every one judges success by the ensemble's own decision (the argmax
of the averaged probabilities), whatever objective it climbs. Attack libraries that treat an
ensemble as one model have no member-aware attack and report no worst case over attacks.

- :func:`evaluate_robustness`: robust accuracy per eps, the worst case over a named list of
  attacks (:data:`ATTACKS`, default :data:`STRONG_ATTACKS`) and restarts, with the per-image
  record of which attack broke what (:class:`Robustness`).
- :func:`pgd` (Madry et al. 2018), :func:`mora` (MORA-style, Yu, Gao and Xu 2022), :func:`apgd`
  (Croce and Hein 2020): one run each, under L_inf or L_2, inside a box.
- the objectives an attack climbs, per-image losses of the members' logits:
  :func:`averaged_logits_loss`, :func:`averaged_probabilities_loss`, :func:`dlr_loss`,
  :func:`mora_loss`.
"""

from ._apgd import apgd, checkpoints
from ._ball import Box, Norm
from ._members import Members, ModelLike, as_members
from ._mora import MORA_SCALES, mora, mora_loss
from ._pgd import pgd
from .losses import (
    Loss,
    averaged_logits_loss,
    averaged_probabilities_loss,
    difference_of_logits_ratio,
    dlr_loss,
    log_averaged_probabilities,
)
from .robustness import ATTACKS, STRONG_ATTACKS, Attack, Robustness, evaluate_robustness

__all__ = [
    "ATTACKS",
    "MORA_SCALES",
    "STRONG_ATTACKS",
    "Attack",
    "Box",
    "Loss",
    "Members",
    "ModelLike",
    "Norm",
    "Robustness",
    "apgd",
    "as_members",
    "averaged_logits_loss",
    "averaged_probabilities_loss",
    "checkpoints",
    "difference_of_logits_ratio",
    "dlr_loss",
    "evaluate_robustness",
    "log_averaged_probabilities",
    "mora",
    "mora_loss",
    "pgd",
]
