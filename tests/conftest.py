"""Makes ``examples/`` and ``benchmarks/`` importable as their scripts import them (``ed_examples``, ``machine``); shared fixtures.

The library's own tests and the harness's tests share ``tests/``. A test module is a harness
module when its source names the harness: ``ed_examples``, an import of ``machine``, or the
``"examples"``/``"benchmarks"`` folder as a path part. ``python -m pytest --library-only``
does not even import those modules (their top-level imports need the extras: scikit-learn,
torchvision, ART) and runs the library's tests and the doctests in ``src/``; CI runs that on
the oldest torch the library declares, in a venv without the extras. A new test file is sorted
by its own source, with no list to edit; a library test that needs an extra skips where it is
missing.
"""

from __future__ import annotations

import re
import sys
from functools import cache
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT / "examples", ROOT / "benchmarks"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

HARNESS_SOURCE = re.compile(r"\bed_examples\b|^\s*(?:from|import)\s+machine\b|([\"'])(?:examples|benchmarks)\1", re.MULTILINE)


@cache
def is_harness_module(path: Path) -> bool:
    """Whether the test module at ``path`` exercises the harness (examples/, benchmarks/)."""
    return path.suffix == ".py" and path.name.startswith("test_") and bool(HARNESS_SOURCE.search(path.read_text()))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--library-only", action="store_true", help="skip the harness's test modules (examples/, benchmarks/)")


def pytest_report_header() -> str:
    return f"torch {torch.__version__}"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if config.getoption("library_only") and is_harness_module(collection_path):
        return True
    return None


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module of tiny models: tensors this small take less time to
    compute than a shared CPU's threads take to meet (about 20 times less on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
