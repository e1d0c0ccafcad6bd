"""The threat model: an L_inf or L_2 ball of radius eps around each image, inside the caller's box.

Random starts, projections and steepest-ascent directions shared by PGD, MORA and APGD, and
the checks of their settings and inputs (errors name the argument, what was expected and
what was got, as :mod:`ensemble_diversity._checks` does).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from .._checks import check_finite, check_floating, check_min_dim, check_nonempty

Norm = Literal["inf", "2"]
NORMS: tuple[Norm, ...] = ("inf", "2")
Box = tuple[float, float]


def per_image_norm(tensor: Tensor) -> Tensor:
    """``[B, 1, ..., 1]``: the L_2 norm of each image of ``tensor`` ``[B, ...]``, shaped to broadcast."""
    norms: Tensor = tensor.flatten(1).norm(dim=1)
    return norms.view(-1, *[1] * (tensor.dim() - 1))


def distance(adversarial: Tensor, images: Tensor, norm: Norm) -> Tensor:
    """``[B]``: each image's perturbation size under ``norm``."""
    delta = (adversarial - images).flatten(1)
    return delta.abs().amax(dim=1) if norm == "inf" else delta.norm(dim=1)


def random_start(images: Tensor, eps: float, norm: Norm, generator: torch.Generator | None) -> Tensor:
    """A random perturbation ``[B, ...]``: uniform in the L_inf ball; under L_2 a uniform direction at a radius uniform in [0, eps]."""
    if norm == "inf":
        return eps * (2 * torch.rand(images.shape, generator=generator, device=images.device, dtype=images.dtype) - 1)
    direction = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    radius = eps * torch.rand((len(images),) + (1,) * (images.dim() - 1), generator=generator, device=images.device, dtype=images.dtype)
    return radius * direction / per_image_norm(direction).clamp_min(1e-12)


def direction(gradient: Tensor, norm: Norm) -> Tensor:
    """The steepest-ascent direction of unit size under ``norm``: the gradient's sign (L_inf) or the normalised gradient (L_2)."""
    return gradient.sign() if norm == "inf" else gradient / per_image_norm(gradient).clamp_min(1e-12)


def project(x: Tensor, images: Tensor, eps: float, norm: Norm, box: Box) -> Tensor:
    """``x`` moved into the ``norm`` ball of radius ``eps`` around ``images``, then into the box.

    Clamping into the box after the L_inf projection stays in the ball (both are per-pixel
    intervals); after the L_2 projection it only shrinks the perturbation, so it stays there too.
    """
    delta = x - images
    if norm == "inf":
        delta = delta.clamp(-eps, eps)
    else:
        delta = delta * (eps / per_image_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
    return (images + delta).clamp(box[0], box[1])


def check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"Expected argument `norm` to be one of {list(NORMS)}, but got {norm!r}")


def check_box(box: Box) -> None:
    """Raise unless ``box`` is ``(low, high)`` with finite ``low < high``."""
    if (
        not isinstance(box, tuple)
        or len(box) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)
        or not box[0] < box[1]
    ):
        raise ValueError(f"Expected argument `box` to be a tuple (low, high) of finite numbers with low < high, but got {box!r}")


def check_eps(eps: float, norm: Norm, box: Box, pixels: int) -> None:
    """Raise unless ``eps`` is a number in [0, the box's diameter under ``norm``] (a larger ball is the whole box: a mistake)."""
    width = box[1] - box[0]
    largest = width if norm == "inf" else width * math.sqrt(pixels)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 <= eps <= largest:
        raise ValueError(
            f"Expected argument `eps` to be a number in [0, {largest:g}] (an L_{norm} radius within the box {box}, "
            f"whose diameter is {largest:g}), but got {eps!r}"
        )


def check_images(images: Tensor, box: Box) -> None:
    """Raise unless ``images`` is a non-empty floating-point batch ``[B, ...]`` of finite values inside ``box``."""
    if not isinstance(images, Tensor):
        raise TypeError(f"Expected argument `images` to be a tensor [B, ...], but got {type(images).__name__}")
    check_min_dim(images, "images", 2, "[B, ...] (batch first)")
    check_nonempty(images, "images", 0, "batch")
    check_floating(images, "images")
    check_finite(images, "images")
    low, high = float(images.min()), float(images.max())
    if low < box[0] or high > box[1]:
        raise ValueError(
            f"Expected argument `images` to lie in the box {box} (pass box=(low, high) for another range, e.g. normalised images), "
            f"but its values run from {low:g} to {high:g}"
        )


def check_positive_int(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Expected argument `{name}` to be a positive integer, but got {value!r}")
