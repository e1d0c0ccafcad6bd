"""The paper's diversity analysis of trained ensembles (section "Ensemble Diversity Analysis").

One entry point, :func:`diversity_section`, computes for each method's ensemble on a test split:

- Table 1: ambiguity entropy E (eq. 5) over all test images;
- Fig. 2: box plots of the discrimination score L_F (eq. 6) per image;
- Fig. 3: box plots of the mean pairwise angle between the members' input gradients;
- Fig. 1: each member's Grad-CAM map on one image and the distance between the centres of
  the members' hottest regions (:mod:`.gradcam`), plus, beyond the paper's single
  image, that distance's median over the images of the box plots.

E, L_F and the angles are :func:`.clean.evaluate`'s, the numbers of the
training command's table. As in Figs. 2 and 3, the box plots and the Grad-CAM median use the
test images that every compared ensemble classifies correctly.

Files written to ``out_dir`` (each atomically):

- ``diversity.json``: every number of the section, the choices made and the library versions;
- ``diversity-per-image.csv``: one row per method and test image (the box plots' data);
- ``fig1-gradcam.png``, ``fig2-discrimination.png``, ``fig3-gradient-angles.png``;
- ``diversity.md``: the Markdown fragment, also returned, with the figures linked.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from ..data.splits import Split
from ..measures.clean import CleanScores, comparison, evaluate
from ..run_dir import library_versions, save_json, save_png, save_text
from ..settings import AT_LEAST_ONE, Check, device_flag, flag
from ..training.checkpoints import load_test_split, load_trained_ensembles, run_flags
from .gradcam import DEFAULT_THRESHOLD, centre_distances, check_threshold, hottest_centre, member_grad_cams

DATA_JSON = "diversity.json"
PER_IMAGE_CSV = "diversity-per-image.csv"
MARKDOWN = "diversity.md"
FIG1 = "fig1-gradcam.png"
FIG2 = "fig2-discrimination.png"
FIG3 = "fig3-gradient-angles.png"


class DiversitySection(NamedTuple):
    """What :func:`diversity_section` computed and wrote."""

    results: dict[str, Any]
    """JSON-ready numbers, as written to ``diversity.json``."""
    markdown: str
    """The report fragment: a table with methods as columns, the three figures linked."""
    files: list[Path]
    """Every file written, in ``out_dir``."""


class _GradCams(NamedTuple):
    distances: Tensor
    """``[N]``: mean pairwise centre distance per image, pixels (NaN where a member's map is empty)."""
    figure_maps: Tensor
    """``[K, H, W]``: the members' maps on the Fig. 1 image."""


def diversity_section(
    ensembles: dict[str, nn.ModuleList],
    split: Split,
    out_dir: Path,
    *,
    image_index: int | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    batch_size: int | None = None,
    markdown_dir: Path | None = None,
) -> DiversitySection:
    """Compute Table 1 and Figs. 1-3 for ``ensembles`` on ``split``; write data and figures to ``out_dir``.

    Args:
        ensembles: method name -> its K >= 2 members (``features`` + ``head``, as
            :mod:`huang2021.members` builds them), on ``split``'s device.
            Members are put in eval mode.
        split: the test images ``[N, channels, H, W]`` and labels ``[N]``.
        out_dir: created if missing; files of an earlier call are replaced.
        image_index: the test image of Fig. 1 (index into ``split``); default: the first image
            every method classifies correctly (image 0 if there is none).
        threshold: a Grad-CAM pixel belongs to the hottest region at ``>= threshold`` times the
            map's maximum (the paper's 0.9; 1.0 is the argmax pixel).
        batch_size: images per forward/backward pass (default: the whole split at once).
        markdown_dir: the directory the Markdown will be read from, for the figure links
            (default: ``out_dir``).

    Returns:
        :class:`DiversitySection` ``(results, markdown, files)``.
    """
    if not ensembles:
        raise ValueError("Expected argument `ensembles` to map at least one method name to its members, but got an empty dict")
    for name, members in ensembles.items():
        if len(members) < 2:
            raise ValueError(f"Expected every ensemble to hold K >= 2 members, but {name!r} has {len(members)}")
    num_images = len(split.labels)
    if num_images == 0:
        raise ValueError("Expected argument `split` to hold at least one image, but it is empty")
    if image_index is not None and not 0 <= image_index < num_images:
        raise ValueError(f"Expected argument `image_index` to be in [0, {num_images}) (an image of the split), but got {image_index}")
    check_threshold(threshold)

    evaluations = {name: evaluate(members, split, batch_size=batch_size) for name, members in ensembles.items()}
    shared = torch.stack([evaluation.correct for evaluation in evaluations.values()]).all(dim=0)
    if image_index is None:
        image_index = int(shared.nonzero()[0]) if shared.any() else 0
    cams = {
        name: _grad_cams(members, split, image_index, threshold, batch_size or num_images)
        for name, members in ensembles.items()
    }

    results = _results(evaluations, cams, shared, split, image_index, threshold)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / name for name in (DATA_JSON, PER_IMAGE_CSV, FIG1, FIG2, FIG3, MARKDOWN)]
    save_json(files[0], results)
    save_text(files[1], _per_image_csv(evaluations, cams, shared, split))
    save_png(files[2], _gradcam_figure(split.images[image_index], cams, threshold, results))
    save_png(files[3], _box_figure(evaluations, shared, "discrimination", "L_F, eq. 6", "Fig. 2: discrimination score"))
    save_png(files[4], _box_figure(evaluations, shared, "angles", "mean pairwise angle (degrees)", "Fig. 3: input-gradient angles"))
    links = Path(os.path.relpath(out_dir, markdown_dir)) if markdown_dir is not None else Path()
    markdown = _markdown(results, {figure: (links / figure).as_posix() for figure in (FIG1, FIG2, FIG3)})
    save_text(files[5], markdown)
    return DiversitySection(results, markdown, files)


@dataclass(frozen=True, kw_only=True)
class DiversitySettings:
    """diversity analysis (``examples/diversity.py``)"""

    out: Path | None = flag(None, "output directory", shown="RUN_DIR/diversity", type=Path)
    image_index: int | None = flag(None, "test image of Fig. 1", shown="the first one every method classifies correctly", type=int)
    threshold: float = flag(
        DEFAULT_THRESHOLD,
        "hottest Grad-CAM region: pixels >= this fraction of the map's maximum; 1.0 = argmax (0.9: the paper's)",
        check=Check(lambda value: 0.0 < value <= 1.0, "in (0, 1] (a fraction of the map's maximum)"),
    )
    batch_size: int | None = flag(None, "test images per pass", check=AT_LEAST_ONE, shown="all at once", type=int)
    device: str = device_flag("where the ensembles run")


class RunAnalysis(NamedTuple):
    """A training run's kept ensembles and test split, ready for :func:`diversity_section`."""

    run_dir: Path
    ensembles: dict[str, nn.ModuleList]
    test: Split
    seed: int


def load_run(run_dir: Path, settings: DiversitySettings) -> RunAnalysis:
    """The kept ensembles of ``run_dir`` and its test split on ``settings.device``.

    Raises ValueError naming ``RUN_DIR`` for a directory that is not a finished run, or
    ``--image-index`` for an image the test split lacks.
    """
    device = torch.device(settings.device)
    try:
        ensembles = {name: members.to(device) for name, members in load_trained_ensembles(run_dir).items()}
        flags = run_flags(run_dir)
        test = load_test_split(flags, device)
    except ValueError as error:
        raise ValueError(f"RUN_DIR: {error}") from None
    if settings.image_index is not None and not 0 <= settings.image_index < len(test.labels):
        raise ValueError(f"Expected --image-index to be in [0, {len(test.labels)}) (a test image), but got {settings.image_index}")
    return RunAnalysis(Path(run_dir), ensembles, test, flags["seed"])


def analyse_run(run: RunAnalysis, settings: DiversitySettings, argv: list[str]) -> tuple[Path, DiversitySection]:
    """Write :func:`diversity_section` for a loaded run to ``--out`` (default ``RUN_DIR/diversity``) with ``command.json``."""
    out = settings.out if settings.out is not None else run.run_dir / "diversity"
    section = diversity_section(
        run.ensembles, run.test, out, image_index=settings.image_index, threshold=settings.threshold, batch_size=settings.batch_size
    )
    save_json(out / "command.json", {"argv": argv, "run_dir": str(run.run_dir), "seed": run.seed, "versions": library_versions()})
    return out, section


def _grad_cams(members: nn.ModuleList, split: Split, image_index: int, threshold: float, batch_size: int) -> _GradCams:
    """Grad-CAM of every member on every image of ``split`` (target: the label), in chunks."""
    members.eval()
    distances = []
    for start in range(0, len(split.labels), batch_size):
        maps = member_grad_cams(members, split.images[start : start + batch_size], split.labels[start : start + batch_size])
        distances.append(centre_distances(maps, threshold=threshold).mean(dim=-1).cpu())
        if start <= image_index < start + batch_size:
            figure_maps = maps[:, image_index - start].cpu()
    return _GradCams(torch.cat(distances), figure_maps)


def _quartiles(values: Tensor) -> dict[str, float | None]:
    """Mean and the box plot's quartiles (None where there are no values, JSON has no NaN)."""
    values = values[~values.isnan()].double()
    if len(values) == 0:
        return {"mean": None, "q1": None, "median": None, "q3": None, "images": 0}
    q1, median, q3 = torch.quantile(values, values.new_tensor([0.25, 0.5, 0.75])).tolist()
    return {"mean": values.mean().item(), "q1": q1, "median": median, "q3": q3, "images": len(values)}


def _results(
    evaluations: dict[str, CleanScores],
    cams: dict[str, _GradCams],
    shared: Tensor,
    split: Split,
    image_index: int,
    threshold: float,
) -> dict[str, Any]:
    table = comparison(evaluations)
    methods = {}
    for name, evaluation in evaluations.items():
        figure_maps = cams[name].figure_maps
        centres = hottest_centre(figure_maps, threshold=threshold)  # [K, 2]
        pairwise = centre_distances(figure_maps[:, None], threshold=threshold)[0]
        methods[name] = {
            "test_accuracy": table["methods"][name]["test_accuracy"],
            "ambiguity_entropy": table["methods"][name]["ambiguity_entropy"],
            "discrimination_score": _quartiles(evaluation.discrimination[shared]),
            "gradient_angle_degrees": _quartiles(evaluation.angles[shared]),
            "gradcam_centre_distance": {
                "figure_image": {
                    "centres_row_col": [[_finite_or_none(v) for v in centre] for centre in centres.tolist()],
                    "pairwise": [_finite_or_none(v) for v in pairwise.tolist()],
                    "mean": _finite_or_none(pairwise.mean().item()),
                },
                "over_images": _quartiles(cams[name].distances[shared]),
            },
        }
    return {
        "test_images": table["test_images"],
        "images_correct_for_all_methods": table["images_correct_for_all_methods"],
        "gradcam": {
            "image_index": image_index,
            "label": int(split.labels[image_index]),
            "target": "the image's label",
            "layer": "last convolutional feature map (input of the global average pool)",
            "upsampling": "bilinear to the input size, then divided by the map's maximum",
            "threshold": threshold,
            "centre": "unweighted centroid of the pixels at >= threshold * the map's maximum",
            "distance": "Euclidean, input pixels, averaged over the member pairs",
        },
        "methods": methods,
        "versions": library_versions(),
    }


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _per_image_csv(evaluations: dict[str, CleanScores], cams: dict[str, _GradCams], shared: Tensor, split: Split) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([
        "method", "image", "label", "ensemble_correct", "correct_for_all_methods",
        "discrimination_score", "gradient_angle_degrees", "gradcam_centre_distance",
    ])  # fmt: skip
    labels = split.labels.tolist()
    for name, evaluation in evaluations.items():
        columns = zip(
            evaluation.correct.tolist(), shared.tolist(), evaluation.discrimination.tolist(),
            evaluation.angles.tolist(), cams[name].distances.tolist(),
        )  # fmt: skip
        for image, (correct, for_all, score, angle, distance) in enumerate(columns):
            writer.writerow([name, image, labels[image], int(correct), int(for_all), repr(score), repr(angle),
                             repr(distance) if math.isfinite(distance) else ""])  # fmt: skip
    return buffer.getvalue()


def _box_figure(evaluations: dict[str, CleanScores], shared: Tensor, field: str, ylabel: str, title: str) -> Figure:
    """One box per method over the images every method classifies correctly; the mean as a triangle."""
    figure = Figure(figsize=(1.2 + 1.1 * len(evaluations), 3.6), layout="constrained")
    axes = figure.add_subplot()
    if shared.any():
        axes.boxplot([getattr(evaluation, field)[shared].numpy() for evaluation in evaluations.values()], showmeans=True)
        axes.set_xticks(range(1, len(evaluations) + 1), list(evaluations))
    else:
        axes.text(0.5, 0.5, "no test image is classified\ncorrectly by every method", ha="center", va="center", transform=axes.transAxes)
    axes.set_ylabel(ylabel)
    axes.set_title(f"{title}\n({int(shared.sum())} test images correct for all methods)", fontsize=9)
    return figure


def _gradcam_figure(image: Tensor, cams: dict[str, _GradCams], threshold: float, results: dict[str, Any]) -> Figure:
    """Rows: methods; columns: the input, then each member's map over it with its centre marked."""
    num_members = max(len(c.figure_maps) for c in cams.values())
    figure = Figure(figsize=(1.5 * (num_members + 1), 1.6 * len(cams) + 0.4), layout="constrained")
    grid = figure.subplots(len(cams), num_members + 1, squeeze=False)
    picture = image.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy()
    picture = picture[..., 0] if picture.shape[-1] == 1 else picture
    for row, (name, cam) in zip(grid, cams.items()):
        for axes in row:
            axes.set_xticks([])
            axes.set_yticks([])
            axes.set_axis_off()
        row[0].imshow(picture, cmap="gray", vmin=0, vmax=1)
        distance = results["methods"][name]["gradcam_centre_distance"]["figure_image"]["mean"]
        row[0].set_title(f"{name}\nd = {_number(distance, 2)} px", fontsize=8)
        centres = hottest_centre(cam.figure_maps, threshold=threshold)
        for member, (axes, heat, centre) in enumerate(zip(row[1:], cam.figure_maps, centres)):
            axes.imshow(picture, cmap="gray", vmin=0, vmax=1)
            axes.imshow(heat.numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
            if not centre.isnan().any():
                axes.plot(centre[1].item(), centre[0].item(), "w+", markersize=10, markeredgewidth=2)
            axes.set_title(f"member {member + 1}", fontsize=8)
    figure.suptitle(f"Fig. 1: Grad-CAM, test image {results['gradcam']['image_index']} (label {results['gradcam']['label']})", fontsize=9)
    return figure


def _number(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _markdown(results: dict[str, Any], figures: dict[str, str]) -> str:
    methods = results["methods"]
    shared = results["images_correct_for_all_methods"]
    gradcam = results["gradcam"]

    def row(label: str, cell) -> str:
        return f"| {label} | " + " | ".join(cell(values) for values in methods.values()) + " |"

    def box(key: str, digits: int):
        def cell(values: dict[str, Any]) -> str:
            stats = values[key]
            if stats["median"] is None:
                return "n/a"
            return f"{stats['median']:.{digits}f} [{stats['q1']:.{digits}f}, {stats['q3']:.{digits}f}]"

        return cell

    lines = [
        "## Diversity analysis (Table 1, Figs. 1-3)",
        "",
        "| | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
        row(f"test accuracy % ({results['test_images']} images)", lambda v: f"{100 * v['test_accuracy']:.2f}"),
        row("E, eq. 5 (Table 1)", lambda v: f"{v['ambiguity_entropy']:.4f}"),
        row("L_F, eq. 6: median [q1, q3] (Fig. 2)", box("discrimination_score", 4)),
        row("L_F, eq. 6: mean", lambda v: _number(v["discrimination_score"]["mean"], 4)),
        row("gradient angle, degrees: median [q1, q3] (Fig. 3)", box("gradient_angle_degrees", 2)),
        row("gradient angle, degrees: mean", lambda v: _number(v["gradient_angle_degrees"]["mean"], 2)),
        row(f"Grad-CAM centre distance, px: image {gradcam['image_index']} (Fig. 1)",
            lambda v: _number(v["gradcam_centre_distance"]["figure_image"]["mean"], 2)),  # fmt: skip
        row("Grad-CAM centre distance, px: median [q1, q3] over images", lambda v: box("over_images", 2)(v["gradcam_centre_distance"])),
        "",
        f"E and accuracy over all {results['test_images']} test images; L_F, the angles and the Grad-CAM "
        f"median over the {shared} images every method classifies correctly (as in Figs. 2-3). "
        f"Grad-CAM: each member's map for the label's logit on its last convolutional feature map, "
        f"upsampled bilinearly to the input and divided by its maximum; a map's centre is the centroid "
        f"of its pixels at >= {gradcam['threshold']:g} of the maximum (the paper's 0.9 is \"the darkest red\"); "
        f"the distance is Euclidean in input pixels, averaged over the member pairs. "
        f"Means are marked by triangles in the box plots.",
        "",
        f"![Fig. 1: Grad-CAM maps of each member]({figures[FIG1]})",
        "",
        f"![Fig. 2: discrimination score L_F]({figures[FIG2]})",
        f"![Fig. 3: angles between the members' input gradients]({figures[FIG3]})",
        "",
    ]
    return "\n".join(lines)
