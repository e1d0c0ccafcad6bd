"""The training methods compared by ``examples/train.py``: which regularisers each adds to eq. 1 (:mod:`.objective` computes it).

- ``baseline``: the ensemble cross-entropy alone (eq. 1), members trained independently.
- ``adp``: eq. 1 plus ADP's regulariser (Pang et al. 2019), the paper's peer baseline; its
  members' CE terms are summed, as in Pang et al.'s code, against which their alpha 2 and
  beta 0.5 were tuned (every other method averages them, as the PDD/DEG authors' code).
- ``pdd``: eq. 1 with Priority Diversified Dropouts on the members' penultimate features
  (Algorithm 1, eq. 2).
- ``deg``: eq. 1 plus lambda times the Dispersed Ensemble Gradients penalty (eqs. 3-4).
- ``pdd+deg``: both, the paper's full method.
- ``gal``: eq. 1 plus lambda times the Gradient Alignment Loss (Kariyappa and Qureshi 2019),
  a peer input-gradient penalty (not in the paper's tables; for the cost comparison of
  ``benchmarks/``), weighted by ``--gal-lambda``.
- ``advt-fgsm``, ``advt-pgd``: adversarial training, eq. 1 on clean and on FGSM / PGD
  examples of the ensemble crafted on each batch (Table 6, AdvT_FGSM / AdvT_PGD; see
  :mod:`.adversarial` for the recipe and its sources).
- ``advt-fgsm+pdd``, ``advt-pgd+pdd``: adversarial training with PDD (Table 6, AdvT + PDD).
- ``trs``: the members' summed CE plus TRS's gradient-similarity and smoothness terms (Yang et
  al. 2021), the smoothness term at a half-clean, half-PGD batch (the library's ``trs_terms``,
  ``trs_perturbation``); weights and eps ramp from ``--trs-*``.
- ``dverge``: DVERGE's cross-training (Yang et al. 2020): each member distils the batch towards
  a shuffled copy of it at one layer, then each member trains on the others' distilled images
  (the library's ``feature_distillation``, ``dverge_loss``); no clean CE; started from the same
  run's trained ``baseline`` when it has one (``--dverge-*``).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

Attack = Literal["fgsm", "pgd"]
Peer = Literal["trs", "dverge"]


class Method(NamedTuple):
    """Which regularisers a method adds to the ensemble cross-entropy."""

    pdd: bool
    deg: bool
    adp: bool
    gal: bool = False
    attack: Attack | None = None
    """Adversarial training with examples from this attack, or None."""
    ce_reduction: Literal["mean", "sum"] = "mean"
    """How eq. 1 reduces the members' CE terms under ``--ce-reduction auto``: the reduction its weights were tuned for."""
    peer: Peer | None = None
    """A peer defence whose own objective replaces eq. 1 plus a regulariser (:mod:`.objective`), or None."""


METHODS: dict[str, Method] = {
    "baseline": Method(pdd=False, deg=False, adp=False),
    "adp": Method(pdd=False, deg=False, adp=True, ce_reduction="sum"),
    "pdd": Method(pdd=True, deg=False, adp=False),
    "deg": Method(pdd=False, deg=True, adp=False),
    "pdd+deg": Method(pdd=True, deg=True, adp=False),
    "gal": Method(pdd=False, deg=False, adp=False, gal=True),
    "advt-fgsm": Method(pdd=False, deg=False, adp=False, attack="fgsm"),
    "advt-pgd": Method(pdd=False, deg=False, adp=False, attack="pgd"),
    "advt-fgsm+pdd": Method(pdd=True, deg=False, adp=False, attack="fgsm"),
    "advt-pgd+pdd": Method(pdd=True, deg=False, adp=False, attack="pgd"),
    # TRS sums the members' CE, as its official code does and its weights were tuned for.
    "trs": Method(pdd=False, deg=False, adp=False, ce_reduction="sum", peer="trs"),
    "dverge": Method(pdd=False, deg=False, adp=False, peer="dverge"),
}


def parse_methods(text: str) -> list[str]:
    """``"baseline,pdd+deg"`` -> ``["baseline", "pdd+deg"]``; raises ValueError naming ``--methods``."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METHODS]
    if not names or unknown:
        raise ValueError(
            f"Expected --methods to be a comma-separated list of {list(METHODS)}, but got {text!r}"
            + (f" (unknown: {unknown})" if unknown else "")
        )
    if len(set(names)) != len(names):
        raise ValueError(f"Expected --methods to name each method once, but got {text!r}")
    return names
