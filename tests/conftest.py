"""Makes the examples' helper package importable as ``ed_examples`` (as ``examples/*.py`` import it); shared fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module of tiny models: tensors this small take less time to
    compute than a shared CPU's threads take to meet (about 20 times less on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
