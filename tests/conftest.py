"""Makes ``examples/`` and ``benchmarks/`` importable as their scripts import them (``ed_examples``, ``machine``); shared fixtures.

The library's own tests and the harness's tests share ``tests/``. A test module is a harness
module when its source names the harness: ``ed_examples``, an import of ``machine``, or the
``"examples"``/``"benchmarks"`` folder as a path part. Every test in such a module gets the
``harness`` marker, so ``python -m pytest -m "not harness"`` runs the library's tests only (and
the doctests in ``src/``); CI runs that on the oldest torch the library declares, in a venv
without the extras. When ``-m`` deselects ``harness``, harness modules are not even imported,
since their top-level imports (scikit-learn, torchvision, ART) need the extras. A new test
file is sorted by its own source, with no list to edit; a library test that needs an extra
uses ``pytest.importorskip`` so that it skips where the extra is missing.
"""

from __future__ import annotations

import re
import sys
from functools import cache
from pathlib import Path

import pytest
import torch
from _pytest.mark.expression import Expression  # pytest's own -m parser (private, stable since pytest 6)

ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT / "examples", ROOT / "benchmarks"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

HARNESS_SOURCE = re.compile(r"\bed_examples\b|^\s*(?:from|import)\s+machine\b|([\"'])(?:examples|benchmarks)\1", re.MULTILINE)


@cache
def is_harness_module(path: Path) -> bool:
    """Whether the test module at ``path`` exercises the harness (examples/, benchmarks/)."""
    return path.suffix == ".py" and path.name.startswith("test_") and bool(HARNESS_SOURCE.search(path.read_text()))


def harness_deselected(config: pytest.Config) -> bool:
    """Whether ``-m`` drops a test marked ``harness`` (and nothing else)."""
    markexpr = config.getoption("markexpr")
    return bool(markexpr) and not Expression.compile(markexpr).evaluate(lambda name, **kwargs: name == "harness")


def pytest_report_header() -> str:
    return f"torch {torch.__version__}"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if harness_deselected(config) and is_harness_module(collection_path):
        return True
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if is_harness_module(item.path):
            item.add_marker(pytest.mark.harness)


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module of tiny models: tensors this small take less time to
    compute than a shared CPU's threads take to meet (about 20 times less on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
