"""Grad-CAM maps of each member and the distance between their hottest regions (Fig. 1).

Grad-CAM (Selvaraju et al., ICCV 2017) weights each channel of a convolutional feature map
``A [B, C, h, w]`` by the mean over cells of the gradient of the class score ``y^c`` (the
target class's logit) with respect to it, sums the weighted channels and keeps the positive
part:

.. math::
    \\alpha^c_k = \\frac{1}{hw} \\sum_{i,j} \\frac{\\partial y^c}{\\partial A^k_{ij}}, \\qquad
    M^c = \\operatorname{ReLU}\\Big(\\sum_k \\alpha^c_k A^k\\Big)

Here ``A`` is the last convolutional feature map of a member, the input of the global average
pool that ends its ``features`` (:mod:`huang2021.members`). The map is
upsampled bilinearly to the input's size, as Grad-CAM does, and divided by its maximum, so a
value reads "fraction of the strongest evidence" and 0 stays "no evidence".

The paper (section "Ensemble Diversity Analysis", Fig. 1) takes "the geometric center of red
regions with the darkest color (i.e., positive value of the neuron importance higher than
0.9)" in each member's map and the Euclidean distance between those centres.
:func:`hottest_centre` is that: the unweighted centroid of the pixels whose normalised value
is at least ``threshold`` (0.9 by default, the paper's; 1.0 gives the argmax pixel, ties
averaged), in pixel coordinates of the input image.

pytorch-grad-cam (PyPI ``grad-cam``) computes the same map, but needs OpenCV (about 150 MB
installed) only to resize it; the few lines below use ``torch.nn.functional.interpolate``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DEFAULT_THRESHOLD = 0.9
"""The paper's "neuron importance higher than 0.9" (Fig. 1)."""


def grad_cam(member: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
    """Grad-CAM map of one member for each image's target class, normalised to peak 1.

    Args:
        member: in eval mode, with ``features`` (an ``nn.Sequential`` ending in
            ``AdaptiveAvgPool2d(1)`` and ``Flatten``) and ``head`` (features to logits).
        images: ``[B, channels, H, W]``.
        targets: ``[B]`` class indices whose logit is explained (the labels, in Fig. 1).

    Returns:
        ``[B, H, W]`` in ``[0, 1]``: each map divided by its maximum (1 at its hottest pixel);
        all zeros where no cell has positive evidence.
    """
    body, pool = _split_features(member)
    if member.training:
        # BatchNorm in training mode mixes the images of a batch, so one image's map would
        # depend on the others.
        raise ValueError("Expected the member in eval mode for Grad-CAM, but it is in training mode; call member.eval()")
    if images.dim() != 4:
        raise ValueError(f"Expected argument `images` to have shape [B, channels, H, W], but got {tuple(images.shape)}")
    if targets.shape != images.shape[:1]:
        raise ValueError(f"Expected argument `targets` to have shape [B] = {tuple(images.shape[:1])}, but got {tuple(targets.shape)}")
    with torch.enable_grad():
        # An input that requires grad keeps the feature map in the graph even when the layers
        # before it have no parameters.
        feature_map = body(images.detach().requires_grad_(True))  # [B, C, h, w]
        if feature_map.dim() != 4:
            raise ValueError(
                f"Expected the member's features before the pooling to be a map [B, C, h, w], "
                f"but got shape {tuple(feature_map.shape)}"
            )
        logits = member.head(pool(feature_map))
        # Summed over the batch, each image's gradient is that of its own score (eval mode).
        score = logits.gather(1, targets.to(logits.device)[:, None]).sum()
        (grads,) = torch.autograd.grad(score, feature_map)
    weights = grads.mean(dim=(2, 3), keepdim=True)  # alpha^c_k: [B, C, 1, 1]
    cam = F.relu((weights * feature_map.detach()).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.amax(dim=(-2, -1), keepdim=True)
    return torch.where(peak > 0, cam / torch.where(peak > 0, peak, torch.ones_like(peak)), torch.zeros_like(cam))


def member_grad_cams(members: nn.ModuleList, images: Tensor, targets: Tensor) -> Tensor:
    """``[K, B, H, W]``: :func:`grad_cam` of every member on the same ``images`` and ``targets``."""
    return torch.stack([grad_cam(member, images, targets) for member in members])


def hottest_centre(maps: Tensor, *, threshold: float = DEFAULT_THRESHOLD) -> Tensor:
    """Centre of each map's hottest region: the centroid of the pixels at ``>= threshold * max``.

    Args:
        maps: ``[..., H, W]``, non-negative (e.g. from :func:`grad_cam`); only each map's shape
            relative to its own maximum matters, so scaling a map changes nothing.
        threshold: in ``(0, 1]``; 0.9 is the paper's, 1.0 the argmax pixel (ties averaged).

    Returns:
        ``[..., 2]``: (row, column) in pixels, pixel centres at integers from 0; NaN for a map
        without a positive value (no hottest region).

    Example:
        >>> maps = torch.zeros(1, 4, 4)
        >>> maps[0, 1, 2], maps[0, 3, 2] = 1.0, 0.95
        >>> hottest_centre(maps)
        tensor([[2., 2.]])
    """
    check_threshold(threshold)
    if maps.dim() < 2:
        raise ValueError(f"Expected argument `maps` to have shape [..., H, W], but got {tuple(maps.shape)}")
    height, width = maps.shape[-2:]
    peak = maps.amax(dim=(-2, -1), keepdim=True)
    hot = ((maps >= threshold * peak) & (peak > 0)).to(torch.promote_types(maps.dtype, torch.float32))
    count = hot.sum(dim=(-2, -1))
    rows = torch.arange(height, dtype=hot.dtype, device=maps.device)
    cols = torch.arange(width, dtype=hot.dtype, device=maps.device)
    row = (hot.sum(dim=-1) * rows).sum(dim=-1) / count
    col = (hot.sum(dim=-2) * cols).sum(dim=-1) / count
    return torch.stack([row, col], dim=-1)  # 0 / 0 = NaN where nothing is hot


def centre_distances(maps: Tensor, *, threshold: float = DEFAULT_THRESHOLD) -> Tensor:
    """Euclidean distance between the hottest-region centres of every pair of members.

    Args:
        maps: ``[K, B, H, W]`` (members, images, pixels), K >= 2, e.g. from :func:`member_grad_cams`.
        threshold: see :func:`hottest_centre`.

    Returns:
        ``[B, P]`` in pixels, for the ``P = K(K-1)/2`` pairs ``(i, j), i < j`` in the order of
        ``torch.triu_indices``; NaN for a pair where either map has no positive value.

    Example:
        >>> maps = torch.zeros(2, 1, 5, 5)
        >>> maps[0, 0, 0, 0] = maps[1, 0, 3, 4] = 1.0
        >>> centre_distances(maps)
        tensor([[5.]])
    """
    if maps.dim() != 4 or maps.shape[0] < 2:
        raise ValueError(f"Expected argument `maps` to have shape [K, B, H, W] with K >= 2, but got {tuple(maps.shape)}")
    centres = hottest_centre(maps, threshold=threshold)  # [K, B, 2]
    rows, cols = torch.triu_indices(maps.shape[0], maps.shape[0], offset=1, device=maps.device)
    return (centres[rows] - centres[cols]).norm(dim=-1).T


def _split_features(member: nn.Module) -> tuple[nn.Module, nn.Module]:
    """``member.features`` as (everything before the pooling, the pooling and flattening)."""
    features = getattr(member, "features", None)
    if not (
        isinstance(features, nn.Sequential)
        and hasattr(member, "head")
        and len(features) >= 3
        and isinstance(features[-2], nn.AdaptiveAvgPool2d)
        and isinstance(features[-1], nn.Flatten)
    ):
        raise ValueError(
            f"Expected the member ({type(member).__name__}) to have `features`, an nn.Sequential ending in "
            "AdaptiveAvgPool2d and Flatten, and a `head`, as huang2021.members builds them"
        )
    return features[:-2], features[-2:]


def check_threshold(threshold: float) -> None:
    """Raise ValueError unless ``threshold`` is a number in (0, 1]."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold <= 1.0:
        raise ValueError(f"Expected argument `threshold` to be in (0, 1] (a fraction of the map's maximum), but got {threshold!r}")
