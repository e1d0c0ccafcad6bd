"""Per-sample cosines between members' input gradients, for every member pair i < j.

Shared by DEG (eq. 3), GAL and the gradient-angle metric (Fig. 3), so that all three agree on
what a cosine is, including for zero gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor


def pairwise_cosines(grads: Tensor, eps: float = 1e-12) -> Tensor:
    """Cosine between members' gradients, per sample and member pair.

    Args:
        grads: ``[K, B, ...]`` (members, batch, any input dimensions), flattened per sample.
        eps: each norm is clamped at ``eps`` from below before dividing, so an exactly zero
            gradient has cosine 0 with everything (it points nowhere, so it agrees with no
            member), never NaN; a non-zero gradient shorter than ``eps`` gets a shrunken cosine.

    Returns:
        ``[B, K*(K-1)/2]``, pairs in the order of ``torch.triu_indices(K, K, offset=1)``.
    """
    num_members, batch = grads.shape[0], grads.shape[1]
    flat = grads.reshape(num_members, batch, -1)
    # Normalise in float32 at least: a half-precision dot product of unit vectors over
    # thousands of pixels loses the digits that separate cos 0.99 from 1.
    unit = torch.nn.functional.normalize(flat.to(torch.promote_types(flat.dtype, torch.float32)), dim=-1, eps=eps)
    gram = torch.einsum("ibd,jbd->bij", unit, unit)
    rows, cols = torch.triu_indices(num_members, num_members, offset=1, device=grads.device)
    return gram[:, rows, cols]
