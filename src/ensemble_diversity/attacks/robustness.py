"""One entry point: robust accuracy of an ensemble per eps, the worst case over a named list of attacks and restarts.

The configuration is data (RobustBench's shape): attack names, eps grid, steps, restarts. An
image counts as robust at an eps only if the ensemble classifies it correctly and it survives
every attack and every restart; the record says per image which attack broke it
(:attr:`Robustness.broken`), so the worst case and the per-attack breakdown come from one record.
Whether an image is broken is the ensemble's own decision on the returned image, judged here
for every attack (built in or the caller's), whatever objective the attack climbed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from .._checks import check_labels
from ._apgd import apgd_run
from ._ball import Box, Norm, check_box, check_eps, check_images, check_norm, check_positive_int, distance, project, random_start
from ._members import Combine, Members, ModelLike, as_members, check_labels_device
from ._mora import MORA_SCALES, mora_runs
from ._pgd import ascend, step_size_of
from .losses import Loss, averaged_logits_loss, averaged_probabilities_loss, dlr_loss


class Attack(Protocol):
    """One run of an attack on images ``[B, ...]`` that the ensemble classifies correctly, with labels ``[B]``.

    Returns adversarial images ``[B, ...]`` within the ``norm`` ball of radius ``eps`` and the box
    (:func:`evaluate_robustness` checks both); where it finds none, the clean image. Randomness
    comes from ``generator`` alone, so a seed repeats a run.
    """

    def __call__(
        self, members: Members, images: Tensor, labels: Tensor, *, eps: float, norm: Norm, steps: int, box: Box, generator: torch.Generator
    ) -> Tensor: ...


def _pgd_on(loss: Loss) -> Attack:
    def attack(
        members: Members, images: Tensor, labels: Tensor, *, eps: float, norm: Norm, steps: int, box: Box, generator: torch.Generator
    ) -> Tensor:
        start = project(images + random_start(images, eps, norm, generator), images, eps, norm, box)
        size = step_size_of(eps, steps, None)
        return ascend(members, images, labels, start, loss=loss, eps=eps, norm=norm, steps=steps, step_size=size, box=box)[0]

    return attack


def _apgd_on(loss: Loss) -> Attack:
    def attack(
        members: Members, images: Tensor, labels: Tensor, *, eps: float, norm: Norm, steps: int, box: Box, generator: torch.Generator
    ) -> Tensor:
        return apgd_run(members, images, labels, loss=loss, eps=eps, norm=norm, steps=steps, box=box, generator=generator)[0]

    return attack


def _mora(members: Members, images: Tensor, labels: Tensor, *, eps: float, norm: Norm, steps: int, box: Box, generator: torch.Generator) -> Tensor:
    return mora_runs(members, images, labels, eps=eps, norm=norm, steps=steps, step_size=None, box=box, scales=MORA_SCALES, generator=generator)[0]


ATTACKS: dict[str, Attack] = {
    "pgd": _pgd_on(averaged_logits_loss),
    "pgd-probs": _pgd_on(averaged_probabilities_loss),
    "mora": _mora,
    "apgd-ce": _apgd_on(averaged_logits_loss),
    "apgd-dlr": _apgd_on(dlr_loss),
}
"""The built-in attacks by name; one run of each:

- ``"pgd"``: :func:`~ensemble_diversity.attacks.pgd` on the CE of the members' averaged logits;
- ``"pgd-probs"``: the same PGD on -log of the averaged probability of the label (what the ensemble decides on);
- ``"mora"``: :func:`~ensemble_diversity.attacks.mora`, one PGD run per scale of ``MORA_SCALES`` (5 x ``steps`` steps);
- ``"apgd-ce"``: :func:`~ensemble_diversity.attacks.apgd` on the CE of the averaged logits;
- ``"apgd-dlr"``: APGD on the DLR loss of the averaged logits (unchanged when the logits are scaled).
"""

STRONG_ATTACKS = ("pgd", "pgd-probs", "mora", "apgd-ce", "apgd-dlr")
"""The default list, in the order they run: the strong protocol's plain-torch attacks, then APGD with both losses."""

Progress = Callable[[int, int, str], None]
"""``progress(done, total, description)``, called after each restart of each attack at each eps."""


class Robustness(NamedTuple):
    """What :func:`evaluate_robustness` returns. Masks are on the CPU; E eps, A attacks, N images."""

    eps: tuple[float, ...]
    """``[E]``: the radii, in the order given."""
    attacks: tuple[str, ...]
    """``[A]``: the attacks' names, in the order they ran."""
    clean: Tensor
    """``[N]`` bool: the ensemble classifies image n correctly."""
    broken: Tensor
    """``[E, A, N]`` bool: some restart of attack a broke image n at eps e. With ``sequential=True`` an
    attack runs only on the images every earlier one failed on, so this marks the attack that broke it first."""
    adversarial: Tensor | None
    """``[E, N, ...]`` on the images' device: the first adversarial image found for image n at eps e
    (the clean image where none was), or None unless ``keep_adversarial=True``."""

    @property
    def robust(self) -> Tensor:
        """``[E, N]`` bool: correct and unbroken by every attack and every restart (the worst case)."""
        return self.clean & ~self.broken.any(dim=1)

    @property
    def accuracy(self) -> Tensor:
        """``[E]``: robust accuracy, the share of all N images in :attr:`robust`."""
        return self.robust.float().mean(dim=-1)

    @property
    def clean_accuracy(self) -> float:
        """The share of all N images the ensemble classifies correctly (the accuracy at eps 0)."""
        return float(self.clean.float().mean())

    def cumulative_accuracy(self) -> Tensor:
        """``[E, A]``: accuracy under attacks 0..a together (the worst case so far; its last column is :attr:`accuracy`)."""
        return (self.clean & ~self.broken.cummax(dim=1).values).float().mean(dim=-1)

    def summary(self) -> str:
        """A plain-text table: a row per eps, the accuracy % after each attack in turn and the worst case."""
        header = ["eps", *(f"+{name}" if a else name for a, name in enumerate(self.attacks)), "worst case"]
        rows = [header]
        cumulative = self.cumulative_accuracy()
        for e, radius in enumerate(self.eps):
            rows.append([f"{radius:g}", *(f"{100 * v:.1f}" for v in cumulative[e].tolist()), f"{100 * float(self.accuracy[e]):.1f}"])
        widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
        lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows]
        return f"clean accuracy {100 * self.clean_accuracy:.1f} % of {self.clean.numel()} images; robust accuracy %:\n" + "\n".join(lines)


def evaluate_robustness(
    model: ModelLike,
    images: Tensor,
    labels: Tensor,
    *,
    eps: float | Sequence[float],
    attacks: Sequence[str] | Mapping[str, Attack] = STRONG_ATTACKS,
    norm: Norm = "inf",
    steps: int = 100,
    restarts: int = 1,
    sequential: bool = True,
    box: Box = (0.0, 1.0),
    batch_size: int = 256,
    seed: int = 0,
    combine: Combine | None = None,
    num_members: int | None = None,
    keep_adversarial: bool = False,
    progress: Progress | None = None,
) -> Robustness:
    """Robust accuracy of the ensemble ``model`` at each eps: the worst case over ``attacks`` and their restarts.

    Args:
        model: an ``Ensemble``, a list of K models, or a function ``[B, ...] -> [K, B, L]``
            (:func:`~ensemble_diversity.attacks.as_members`); in eval mode while attacked, every
            module's mode restored afterwards.
        images: ``[N, ...]`` inside ``box``; every computation runs on their device.
        labels: ``[N]`` class indices.
        eps: one radius or a grid; 0 gives the clean accuracy.
        attacks: names from :data:`ATTACKS` in the order to run them, or a mapping from names to
            :class:`Attack` functions (your own, or ``ATTACKS``' entries).
        norm: ``"inf"`` or ``"2"``.
        steps: iterations per run (MORA: per scale).
        restarts: runs of each attack, each from a new random start on the images the earlier
            runs failed on.
        sequential: each attack runs only on the images every earlier attack failed on (as
            AutoAttack runs; cheaper). False runs each on every correctly classified image, so
            that ``broken[e, a]`` is attack a's own result.
        box: the pixel range ``(low, high)`` of the images and of every adversarial image.
        batch_size: images per attack call (memory and speed only).
        seed: seeds the one generator of every random start (on the images' device).
        combine: the ensemble's decision: default an ``Ensemble``'s own, ``"probabilities"``
            otherwise (argmax of the averaged softmax, the paper's ensemble).
        num_members: the K you expect, checked against the model.
        keep_adversarial: also return the adversarial images ``[E, N, ...]``.
        progress: ``progress(done, total, description)``, e.g. to drive a progress bar.

    Returns:
        :class:`Robustness`: ``accuracy`` ``[E]``, the ``broken`` record ``[E, A, N]``, ``summary()``.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> models = [torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)) for _ in range(3)]
        >>> images, labels = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
        >>> result = evaluate_robustness(models, images, labels, eps=[0.0, 0.1], steps=5)
        >>> result.broken.shape, bool(result.accuracy[0] == result.clean_accuracy), bool(result.accuracy[1] <= result.accuracy[0])
        (torch.Size([2, 5, 8]), True, True)
    """
    grid = tuple(eps) if isinstance(eps, Sequence) else (eps,)
    chosen = _chosen_attacks(attacks)
    check_norm(norm)
    check_box(box)
    check_images(images, box)
    if not grid:
        raise ValueError("Expected argument `eps` to be a number or a non-empty sequence of numbers, but got an empty sequence")
    for radius in grid:
        check_eps(radius, norm, box, images[0].numel())
    for value, name in ((steps, "steps"), (restarts, "restarts"), (batch_size, "batch_size")):
        check_positive_int(value, name)
    if progress is not None and not callable(progress):
        raise TypeError(f"Expected argument `progress` to be a function (done, total, description) or None, but got {type(progress).__name__}")
    members = as_members(model, combine=combine, num_members=num_members)
    generator = torch.Generator(device=images.device).manual_seed(seed)
    total, done = len(grid) * len(chosen) * restarts, 0
    with members.evaluating():
        with torch.no_grad():
            check_labels(labels, "labels", len(images))
            check_labels_device(labels, images)
            batches = _batches(torch.arange(len(images), device=images.device), batch_size)
            clean = torch.cat([members.correct(members.check(images[part], labels[part]), labels[part]) for part in batches])
        broken = torch.zeros(len(grid), len(chosen), len(images), dtype=torch.bool, device=images.device)
        adversarial = images.detach().unsqueeze(0).repeat(len(grid), *[1] * images.dim()) if keep_adversarial else None
        for e, radius in enumerate(grid):
            robust = clean.clone()
            for a, (name, attack) in enumerate(chosen):
                pool = robust if sequential else clean
                for restart in range(restarts):
                    if radius > 0:
                        for part in _batches((pool & ~broken[e, a]).nonzero().squeeze(1), batch_size):
                            x, y = images[part].detach(), labels[part]
                            candidate = attack(members, x, y, eps=radius, norm=norm, steps=steps, box=box, generator=generator)
                            _check_candidate(name, candidate, x, radius, norm, box)
                            with torch.no_grad():
                                fooled = ~members.correct(members(candidate), y)
                            if adversarial is not None:  # the first image found: no earlier attack broke it
                                first = fooled & robust[part]
                                adversarial[e, part[first]] = candidate[first].detach()
                            broken[e, a, part[fooled]] = True
                    done += 1
                    if progress is not None:
                        still = int((robust & ~broken[e, a]).sum())
                        progress(done, total, f"eps {radius:g}, {name}, restart {restart + 1}/{restarts}: {still}/{len(images)} robust")
                robust &= ~broken[e, a]
    return Robustness(grid, tuple(name for name, _ in chosen), clean.cpu(), broken.cpu(), adversarial)


def _batches(index: Tensor, batch_size: int) -> list[Tensor]:
    """``index`` ``[M]`` cut into consecutive pieces of at most ``batch_size``."""
    return [index[start : start + batch_size] for start in range(0, len(index), batch_size)]


def _chosen_attacks(attacks: Sequence[str] | Mapping[str, Attack]) -> list[tuple[str, Attack]]:
    """``(name, function)`` pairs in order, checked: known names, no repeats, callables."""
    if isinstance(attacks, Mapping):
        pairs = list(attacks.items())
        for name, attack in pairs:
            if not isinstance(name, str) or not callable(attack):
                raise TypeError(f"Expected argument `attacks` to map names (str) to attack functions, but got {name!r}: {type(attack).__name__}")
    elif isinstance(attacks, Sequence) and not isinstance(attacks, str):
        unknown = [name for name in attacks if name not in ATTACKS]
        if unknown:
            raise ValueError(f"Expected argument `attacks` to name attacks of {list(ATTACKS)} (or map names to your own), but got {unknown}")
        pairs = [(name, ATTACKS[name]) for name in attacks]
    else:
        raise TypeError(f"Expected argument `attacks` to be a sequence of names or a mapping of names to attacks, but got {attacks!r}")
    names = [name for name, _ in pairs]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"Expected argument `attacks` to name at least one attack, each once, but got {names}")
    return pairs


def _check_candidate(name: str, candidate: Tensor, images: Tensor, eps: float, norm: Norm, box: Box) -> None:
    """Raise unless attack ``name`` returned images of the input's shape within the ball and the box (float32 slack)."""
    if not isinstance(candidate, Tensor) or candidate.shape != images.shape:
        got = f"shape {tuple(candidate.shape)}" if isinstance(candidate, Tensor) else type(candidate).__name__
        raise ValueError(f"Expected attack {name!r} to return images of shape {tuple(images.shape)}, but it returned {got}")
    slack = 1e-5 * max(1.0, eps)
    if bool((distance(candidate, images, norm) > eps + slack).any()) or bool((candidate < box[0]).any() | (candidate > box[1]).any()):
        raise ValueError(
            f"Expected attack {name!r} to return images within the L_{norm} ball of radius {eps:g} and the box {box}, but some lie outside"
        )
