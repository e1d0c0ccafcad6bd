"""Makes ``examples/`` and ``benchmarks/`` importable as their scripts import them (``ed_examples``, ``machine``); shared fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT / "examples", ROOT / "benchmarks"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module of tiny models: tensors this small take less time to
    compute than a shared CPU's threads take to meet (about 20 times less on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
