"""The readers of Fashion-MNIST, CIFAR-100 and Tiny-ImageNet on tiny files written in each data
set's published on-disk format, their errors for a missing or wrong ``--data-root``, and
``train.py`` training on them."""

from __future__ import annotations

import pickle
import runpy
import struct
import types
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("torchvision")
from huang2021.data.image_files import TINY_IMAGENET_URL, read_image_dataset  # noqa: E402
from huang2021.data.splits import batch_images, load_splits  # noqa: E402
from PIL import Image  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
train = types.SimpleNamespace(**runpy.run_path(str(EXAMPLES / "train.py")))

PER_CLASS = {"train": 10, "test": 2}
CLASSES = 3  # of the data set's 10 / 100 / 200: labels 0, 1, 2 only


def labels_of(part: str) -> np.ndarray:
    return np.repeat(np.arange(CLASSES), PER_CLASS[part])


def pixels(part: str, shape: tuple[int, ...]) -> np.ndarray:
    """Distinct, known uint8 images ``[N, *shape]``."""
    count = CLASSES * PER_CLASS[part]
    return np.random.default_rng(len(part)).integers(0, 256, (count, *shape), dtype=np.uint8)


def flat_colours(part: str) -> np.ndarray:
    """``[N, 64, 64, 3]`` uint8, one distinct colour per image: what JPEG stores almost losslessly."""
    count = CLASSES * PER_CLASS[part]
    colours = (np.arange(count)[:, None] * np.array([37, 91, 53]) + 20) % 236
    return np.broadcast_to(colours[:, None, None, :], (count, 64, 64, 3)).astype(np.uint8)


# -- Fashion-MNIST: idx files (big-endian magic 0x0803 / 0x0801, then the dimensions) --------


def write_fashion_mnist(root: Path) -> None:
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for part, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = pixels(part, (28, 28)), labels_of(part).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">iiii", 0x0803, len(images), 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">ii", 0x0801, len(labels)) + labels.tobytes())


# -- CIFAR-100: Python 2 pickles, whose byte strings load as str under encoding="latin1" -------


class _Python2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` (BINSTRING opcodes), as in the published CIFAR-100 pickles."""

    def save_python2_str(self, value: bytes) -> None:
        if len(value) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(value)]) + value)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(value)) + value)
        self.memoize(value)

    dispatch = pickle._Pickler.dispatch.copy()
    dispatch[bytes] = save_python2_str


def python2_pickle(path: Path, value: dict) -> None:
    with path.open("wb") as file:
        _Python2Pickler(file, protocol=2).dump(value)


def write_cifar100(root: Path) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for part in ("train", "test"):
        labels = labels_of(part).tolist()
        python2_pickle(
            folder / part,
            {
                b"filenames": [f"image_{i}.png".encode() for i in range(len(labels))],
                b"batch_label": f"{part}ing batch 1 of 1".encode(),
                b"fine_labels": labels,
                b"coarse_labels": [label // 5 for label in labels],
                b"data": pixels(part, (3072,)),  # [N, 3072]: the red plane, then green, then blue, row-major
            },
        )
    names = {b"fine_label_names": [f"class{i}".encode() for i in range(100)], b"coarse_label_names": [f"super{i}".encode() for i in range(20)]}
    python2_pickle(folder / "meta", names)


# -- Tiny-ImageNet: the tiny-imagenet-200/ folder -----------------------------------------------

WNIDS = ["n01443537", "n01629819", "n01641577"]


def write_tiny_imagenet(root: Path) -> None:
    folder = root / "tiny-imagenet-200"
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(reversed(WNIDS)) + "\n")  # not sorted, as the real file
    train_images, val_images = flat_colours("train"), flat_colours("test")
    for index, (image, label) in enumerate(zip(train_images, labels_of("train"))):
        images = folder / "train" / WNIDS[label] / "images"
        images.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(images / f"{WNIDS[label]}_{index}.JPEG")
        with (folder / "train" / WNIDS[label] / f"{WNIDS[label]}_boxes.txt").open("a") as boxes:
            boxes.write(f"{WNIDS[label]}_{index}.JPEG\t0\t0\t63\t63\n")
    lines = []
    for index, (image, label) in enumerate(zip(val_images, labels_of("test"))):
        mode = "L" if index == 0 else "RGB"  # the real set holds a few greyscale JPEGs
        Image.fromarray(image).convert(mode).save(folder / "val" / "images" / f"val_{index}.JPEG")
        lines.append(f"val_{index}.JPEG\t{WNIDS[label]}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


WRITERS = {"fashion-mnist": write_fashion_mnist, "cifar100": write_cifar100, "tiny-imagenet": write_tiny_imagenet}
SHAPES = {"fashion-mnist": (1, 28, 28), "cifar100": (3, 32, 32), "tiny-imagenet": (3, 64, 64)}


@pytest.mark.parametrize("name", list(WRITERS))
def test_reader_returns_the_images_and_labels_written(tmp_path, name):
    WRITERS[name](tmp_path)
    (train_images, train_labels), (test_images, test_labels) = read_image_dataset(name, tmp_path)

    assert train_images.shape == (30, *SHAPES[name]) and test_images.shape == (6, *SHAPES[name])
    assert train_images.dtype == torch.uint8
    assert torch.equal(train_labels, torch.from_numpy(labels_of("train")))
    assert torch.equal(test_labels, torch.from_numpy(labels_of("test")))
    if name == "fashion-mnist":
        assert torch.equal(train_images[:, 0], torch.from_numpy(pixels("train", (28, 28))))
    if name == "cifar100":  # planes R, G, B of 32x32, row-major
        assert torch.equal(test_images, torch.from_numpy(pixels("test", (3072,))).view(6, 3, 32, 32))
    if name == "tiny-imagenet":  # JPEG is lossy: close, not equal; the greyscale one repeated to RGB
        written = torch.from_numpy(flat_colours("train")).permute(0, 3, 1, 2).float()
        assert (train_images.float() - written).abs().max() <= 3
        assert torch.equal(test_images[0, 0], test_images[0, 1])


@pytest.mark.parametrize("name", list(WRITERS))
def test_splits_are_in_unit_range_and_add_up(tmp_path, name):
    WRITERS[name](tmp_path)
    splits = load_splits(name, tmp_path, seed=0, device=torch.device("cpu"), val_fraction=0.2)

    assert (len(splits.train.labels), len(splits.validation.labels), len(splits.test.labels)) == (24, 6, 6)
    # stratified: each class holds out 2 of its 10 training images
    assert torch.bincount(splits.validation.labels).tolist() == [2, 2, 2]
    images = batch_images(splits.train.images, torch.arange(24))
    assert images.dtype == torch.float32 and images.shape == (24, *SHAPES[name])
    assert 0.0 <= images.min() and images.max() <= 1.0 and images.max() > 0.5
    other_seed = load_splits(name, tmp_path, seed=1, device=torch.device("cpu"), val_fraction=0.2)
    assert not torch.equal(other_seed.validation.images, splits.validation.images)


@pytest.mark.parametrize(
    ("name", "hint"),
    [("fashion-mnist", "--download"), ("cifar100", "--download"), ("tiny-imagenet", TINY_IMAGENET_URL)],
)
def test_missing_data_set_says_where_and_how(tmp_path, name, hint):
    with pytest.raises(ValueError, match="--data-root") as error:
        read_image_dataset(name, tmp_path / "empty")
    message = str(error.value)
    assert hint in message and str(tmp_path / "empty") in message


def test_wrong_fashion_mnist_files_are_refused(tmp_path):
    write_fashion_mnist(tmp_path)
    (tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"not an idx file")
    with pytest.raises(ValueError, match="--data-root"):
        read_image_dataset("fashion-mnist", tmp_path)


def test_a_cifar100_pickle_without_labels_is_refused(tmp_path):
    write_cifar100(tmp_path)
    python2_pickle(tmp_path / "cifar-100-python" / "train", {b"data": np.zeros((2, 3072), np.uint8)})
    with pytest.raises(ValueError, match="--data-root.*fine_labels"):
        read_image_dataset("cifar100", tmp_path)


def test_cifar10_meta_under_the_cifar100_name_is_refused(tmp_path):
    write_cifar100(tmp_path)
    python2_pickle(tmp_path / "cifar-100-python" / "meta", {b"fine_label_names": [f"class{i}".encode() for i in range(10)]})
    with pytest.raises(ValueError, match="--data-root.*100 class names.*10"):
        read_image_dataset("cifar100", tmp_path)


def test_fashion_mnist_images_of_the_wrong_size_are_refused(tmp_path):
    write_fashion_mnist(tmp_path)
    (tmp_path / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").write_bytes(struct.pack(">iiii", 0x0803, 6, 32, 32) + bytes(6 * 32 * 32))
    with pytest.raises(ValueError, match="--data-root.*1x28x28.*32x32"):
        read_image_dataset("fashion-mnist", tmp_path)


def test_tiny_imagenet_annotation_of_an_unknown_wnid_is_refused(tmp_path):
    write_tiny_imagenet(tmp_path)
    annotations = tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    annotations.write_text(annotations.read_text().replace(WNIDS[2], "n99999999"))
    with pytest.raises(ValueError, match="--data-root.*val_annotations.txt"):
        read_image_dataset("tiny-imagenet", tmp_path)


def test_tiny_imagenet_class_folders_must_match_wnids(tmp_path):
    write_tiny_imagenet(tmp_path)
    (tmp_path / "tiny-imagenet-200" / "wnids.txt").write_text("\n".join(WNIDS[:2]))
    with pytest.raises(ValueError, match=f"--data-root.*{WNIDS[2]}"):
        read_image_dataset("tiny-imagenet", tmp_path)


@pytest.mark.parametrize(
    ("name", "arch", "method"), [("fashion-mnist", "resnet18", "pdd"), ("cifar100", "cnn", "pdd+deg"), ("tiny-imagenet", "vgg16", "baseline")]
)
def test_train_runs_on_each_data_set(tmp_path, capsys, name, arch, method):
    WRITERS[name](tmp_path / "data")
    flags = ["--dataset", name, "--data-root", str(tmp_path / "data"), "--arch", arch, "--width", "4", "--val-fraction", "0.2"]
    results = train.main(["--run-dir", str(tmp_path / "run"), *flags, "--epochs", "1", "--max-batches", "2", "--members", "2", "--methods", method])

    assert results["test_images"] == 6
    saved = torch.load(tmp_path / "run" / f"model-{method}.pt", weights_only=True)
    assert (saved["arch"], saved["dataset"], saved["in_channels"]) == (arch, name, SHAPES[name][0])
    assert saved["num_classes"] == {"fashion-mnist": 10, "cifar100": 100, "tiny-imagenet": 200}[name]
    assert "24 training / 6 validation / 6 test images" in capsys.readouterr().out


def test_train_refuses_a_missing_data_set_before_creating_the_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--run-dir", str(tmp_path / "run"), "--dataset", "cifar100", "--data-root", str(tmp_path / "none")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--data-root" in err and "cifar-100-python" in err and "--download" in err
    assert not (tmp_path / "run").exists()


def test_a_failed_download_names_the_data_root(tmp_path, monkeypatch):
    from torchvision.datasets import FashionMNIST

    def offline(self):
        raise OSError("no network")

    monkeypatch.setattr(FashionMNIST, "download", offline)
    with pytest.raises(ValueError, match="--data-root.*no network"):
        read_image_dataset("fashion-mnist", tmp_path, download=True)


def test_download_cannot_fetch_tiny_imagenet(tmp_path):
    with pytest.raises(ValueError, match=f"--download cannot fetch Tiny-ImageNet.*{TINY_IMAGENET_URL}"):
        read_image_dataset("tiny-imagenet", tmp_path, download=True)
