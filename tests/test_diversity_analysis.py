"""The diversity section (``huang2021/evaluation/diversity_analysis.py``: Table 1, Figs. 1-3) and its
command, ``examples/diversity.py``."""

from __future__ import annotations

import copy
import csv
import json
import re
import runpy
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from huang2021.data.splits import Split, digits_splits
from huang2021.evaluation.diversity_analysis import DATA_JSON, FIG1, FIG2, FIG3, MARKDOWN, PER_IMAGE_CSV, diversity_section
from huang2021.measures.clean import evaluate
from huang2021.members import build_members

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
diversity = types.SimpleNamespace(**runpy.run_path(str(EXAMPLES / "diversity.py")))
train = types.SimpleNamespace(**runpy.run_path(str(EXAMPLES / "train.py")))

pytestmark = pytest.mark.usefixtures("one_thread")

def _trained_ensembles(splits, steps: tuple[int, int]) -> dict[str, torch.nn.ModuleList]:
    """Three tiny members after a few SGD steps, kept at two step counts: accurate on some
    images, not on all, and differently so."""
    torch.manual_seed(0)
    members = build_members(3, 8, 10)
    optimiser = torch.optim.SGD(members.parameters(), lr=0.1, momentum=0.9)
    images, labels = splits.train.images[:128], splits.train.labels[:128]
    kept = {}
    for step in range(1, max(steps) + 1):
        loss = sum(F.cross_entropy(member(images), labels) for member in members)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step in steps:
            kept[f"step{step}"] = copy.deepcopy(members).eval()
    return kept


@pytest.fixture(scope="module")
def setup():
    splits = digits_splits(0, torch.device("cpu"))
    test = Split(splits.test.images[:40], splits.test.labels[:40])
    return _trained_ensembles(splits, (15, 40)), test


@pytest.fixture(scope="module")
def section(setup, tmp_path_factory):
    ensembles, test = setup
    out = tmp_path_factory.mktemp("section")
    return out, diversity_section(ensembles, test, out, batch_size=16)


def _links(markdown: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)


def test_the_section_writes_every_file_and_its_markdown_links_them(section):
    out, result = section
    expected = [DATA_JSON, PER_IMAGE_CSV, FIG1, FIG2, FIG3, MARKDOWN]
    assert [path.name for path in result.files] == expected
    for path in result.files:
        assert path.parent == out and path.stat().st_size > 0
    for png in (FIG1, FIG2, FIG3):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(_links(result.markdown)) == sorted([FIG1, FIG2, FIG3])
    assert all((out / link).exists() for link in _links(result.markdown))
    assert (out / MARKDOWN).read_text() == result.markdown
    assert json.loads((out / DATA_JSON).read_text()) == result.results
    assert not [path.name for path in out.iterdir() if path.name.endswith(".tmp")]


def test_markdown_links_are_relative_to_the_directory_of_the_report(setup, tmp_path):
    ensembles, test = setup
    result = diversity_section(ensembles, Split(test.images[:6], test.labels[:6]), tmp_path / "diversity", markdown_dir=tmp_path)
    links = _links(result.markdown)
    assert links == [f"diversity/{FIG1}", f"diversity/{FIG2}", f"diversity/{FIG3}"]
    assert all((tmp_path / link).exists() for link in links)


def test_the_table_has_a_column_per_method_and_a_row_per_measure(section):
    _, result = section
    header, rule, *rows = [line for line in result.markdown.splitlines() if line.startswith("|")]
    assert header == "| | step15 | step40 |" and rule == "|---|---|---|"
    assert [row.split(" | ")[0].lstrip("| ") for row in rows][:2] == ["test accuracy % (40 images)", "E, eq. 5 (Table 1)"]
    assert all(row.count("|") == 4 for row in rows)


def test_box_plot_data_are_the_per_image_measures_of_evaluate(setup, section):
    ensembles, test = setup
    out, result = section
    evaluations = {name: evaluate(members, test) for name, members in ensembles.items()}
    shared = evaluations["step15"].correct & evaluations["step40"].correct
    assert 0 < int(shared.sum()) < len(shared), "the fixture should leave some images misclassified"
    rows = list(csv.DictReader((out / PER_IMAGE_CSV).open()))
    assert len(rows) == 2 * len(test.labels)
    for name, evaluation in evaluations.items():
        mine = [row for row in rows if row["method"] == name]
        assert [int(row["image"]) for row in mine] == list(range(len(test.labels)))
        assert [bool(int(row["ensemble_correct"])) for row in mine] == evaluation.correct.tolist()
        assert [bool(int(row["correct_for_all_methods"])) for row in mine] == shared.tolist()
        assert torch.allclose(torch.tensor([float(row["discrimination_score"]) for row in mine]), evaluation.discrimination, rtol=1e-5)
        assert torch.allclose(torch.tensor([float(row["gradient_angle_degrees"]) for row in mine]), evaluation.angles, rtol=1e-5)

        numbers = result.results["methods"][name]
        assert numbers["ambiguity_entropy"] == pytest.approx(evaluation.ambiguity_entropy)
        assert numbers["test_accuracy"] == pytest.approx(evaluation.accuracy)
        for key, values in (("discrimination_score", evaluation.discrimination), ("gradient_angle_degrees", evaluation.angles)):
            box = values[shared].double()
            assert numbers[key]["images"] == int(shared.sum())
            assert numbers[key]["median"] == pytest.approx(box.median().item() if len(box) % 2 else box.quantile(0.5).item(), rel=1e-5)
            assert numbers[key]["mean"] == pytest.approx(box.mean().item(), rel=1e-5)


def test_figure_1_uses_the_first_image_every_method_classifies_correctly(setup, section):
    ensembles, test = setup
    _, result = section
    shared = torch.stack([evaluate(members, test).correct for members in ensembles.values()]).all(dim=0)
    gradcam = result.results["gradcam"]
    assert gradcam["image_index"] == int(shared.nonzero()[0]) and gradcam["threshold"] == 0.9
    for numbers in result.results["methods"].values():
        figure = numbers["gradcam_centre_distance"]["figure_image"]
        assert len(figure["centres_row_col"]) == 3 and len(figure["pairwise"]) == 3
        assert figure["mean"] == pytest.approx(sum(figure["pairwise"]) / 3)


def test_chunked_evaluation_gives_the_same_numbers(setup):
    ensembles, test = setup
    whole, chunked = evaluate(ensembles["step40"], test), evaluate(ensembles["step40"], test, batch_size=7)
    assert whole.accuracy == chunked.accuracy and whole.ambiguity_entropy == pytest.approx(chunked.ambiguity_entropy)
    assert torch.equal(whole.correct, chunked.correct)
    assert torch.allclose(whole.discrimination, chunked.discrimination, rtol=1e-5)
    assert torch.allclose(whole.angles, chunked.angles, atol=1e-3)
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(ensembles["step40"], test, batch_size=0)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [({"image_index": 40}, "image_index"), ({"image_index": -1}, "image_index"), ({"threshold": 0.0}, "threshold")],
)
def test_bad_arguments_are_refused_naming_them(setup, tmp_path, kwargs, named):
    ensembles, test = setup
    with pytest.raises(ValueError, match=named):
        diversity_section(ensembles, test, tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())


def test_an_empty_dict_or_a_single_member_is_refused(setup, tmp_path):
    ensembles, test = setup
    with pytest.raises(ValueError, match="ensembles"):
        diversity_section({}, test, tmp_path)
    with pytest.raises(ValueError, match="K >= 2"):
        diversity_section({"one": ensembles["step40"][:1]}, test, tmp_path)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "run"
    train.main(["--run-dir", str(path), "--methods", "baseline,pdd", "--epochs", "1", "--max-batches", "3", "--width", "8"])
    return path


def test_the_command_loads_a_run_and_writes_the_section(run_dir, tmp_path, capsys):
    out = diversity.main([str(run_dir), "--out", str(tmp_path / "div"), "--batch-size", "100", "--image-index", "5"])
    assert out == tmp_path / "div"
    results = json.loads((out / DATA_JSON).read_text())
    assert list(results["methods"]) == ["baseline", "pdd"] and results["gradcam"]["image_index"] == 5
    assert results["test_images"] == 360
    stored = json.loads((run_dir / "results.json").read_text())
    for name in ("baseline", "pdd"):  # the training command's numbers, from the reloaded models
        assert results["methods"][name]["ambiguity_entropy"] == pytest.approx(stored["methods"][name]["ambiguity_entropy"])
    command = json.loads((out / "command.json").read_text())
    assert command["seed"] == 0 and "torch" in command["versions"]
    assert "## Diversity analysis" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--threshold", "1.5"], "--threshold"),
        (["--batch-size", "0"], "--batch-size"),
        (["--image-index", "360"], "--image-index"),
    ],
)
def test_the_command_refuses_bad_flags_naming_them(run_dir, tmp_path, capsys, flags, named):
    with pytest.raises(SystemExit):
        diversity.main([str(run_dir), "--out", str(tmp_path / "div"), *flags])
    assert named in capsys.readouterr().err
    assert not (tmp_path / "div").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_the_command_refuses_cuda_without_a_device(run_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        diversity.main([str(run_dir), "--out", str(tmp_path / "div"), "--device", "cuda"])
    assert "--device" in capsys.readouterr().err


def test_the_command_refuses_a_directory_that_is_not_a_finished_run(run_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        diversity.main([str(tmp_path)])
    error = capsys.readouterr().err
    assert "RUN_DIR" in error and "config.json" in error
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text((run_dir / "config.json").read_text())
    with pytest.raises(SystemExit):
        diversity.main([str(partial)])
    assert "model-baseline.pt" in capsys.readouterr().err
