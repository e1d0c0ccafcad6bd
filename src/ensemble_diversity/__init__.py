"""Diversity regularizers for deep ensembles (Huang et al., AAAI 2021).

- :class:`PriorityDiversifiedDropout`: Priority Diversified Dropouts (Algorithm 1, eq. 2).
- :func:`dispersed_gradient_loss`, :func:`deg_penalty`: Dispersed Ensemble Gradients (eqs. 3-4).
- :func:`ambiguity_entropy`, :func:`discrimination_score`, :func:`gradient_angles`: the
  diversity metrics (eqs. 5-6, Fig. 3).
- :func:`adp_regularizer`, :func:`gal_penalty`: peer baselines (Pang et al. 2019; Kariyappa and
  Qureshi 2019).
- :func:`trs_terms`, :func:`trs_perturbation`: TRS (Yang et al. 2021); :func:`feature_distillation`,
  :func:`dverge_loss`: DVERGE (Yang et al. 2020), peer defences.
- :class:`Ensemble`, :func:`ensemble_cross_entropy`: the ensemble (PDD between any K
  classifiers' bodies and heads) and its loss (eq. 1); :class:`EnsembleMembers`, its members'
  forward as the module to wrap in DistributedDataParallel or ``torch.compile``.
- :class:`VectorizedMembers`: K members of one architecture run as one ``torch.func.vmap`` call.
- :mod:`~ensemble_diversity.attacks`: how robust is the ensemble? Ensemble-aware attacks and
  the worst case over them (:func:`~ensemble_diversity.attacks.evaluate_robustness`).
"""

from . import attacks
from ._checks import NonFiniteError
from .adp import ADPRegularizer, adp_regularizer
from .deg import GradientPenalty, deg_penalty, dispersed_gradient_loss, member_input_gradients, member_inputs
from .dverge import CrossTraining, distillation_features, draw_layer, dverge_loss, feature_distillation
from .ensemble import Ensemble, EnsembleMembers, MemberOutputs
from .ensemble_loss import ensemble_cross_entropy
from .gal import gal_penalty, gradient_alignment_loss
from .metrics import ambiguity_entropy, discrimination_score, gradient_angles
from .pdd import PriorityDiversifiedDropout, PriorityStatistics, default_num_intervals
from .trs import TRSTerms, trs_perturbation, trs_terms
from .vectorized import VectorizedMembers

__all__ = [
    "ADPRegularizer",
    "CrossTraining",
    "Ensemble",
    "EnsembleMembers",
    "GradientPenalty",
    "MemberOutputs",
    "NonFiniteError",
    "PriorityDiversifiedDropout",
    "PriorityStatistics",
    "TRSTerms",
    "VectorizedMembers",
    "adp_regularizer",
    "ambiguity_entropy",
    "attacks",
    "default_num_intervals",
    "deg_penalty",
    "discrimination_score",
    "dispersed_gradient_loss",
    "distillation_features",
    "draw_layer",
    "dverge_loss",
    "ensemble_cross_entropy",
    "feature_distillation",
    "gal_penalty",
    "gradient_alignment_loss",
    "gradient_angles",
    "member_input_gradients",
    "member_inputs",
    "trs_perturbation",
    "trs_terms",
]
__version__ = "0.1.0"
