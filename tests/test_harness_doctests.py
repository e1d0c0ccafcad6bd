"""The examples in the harness's docstrings (``examples/huang2021``) run as written: pytest's
``--doctest-modules`` collects only ``src/`` (and these tests, which ``--library-only`` leaves out)."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import huang2021
import pytest

MODULES = [
    module.name
    for module in pkgutil.walk_packages(huang2021.__path__, "huang2021.")
    if ">>>" in Path(importlib.util.find_spec(module.name).origin).read_text()
]


def test_the_harness_has_doctests():
    assert {"huang2021.members.resnet", "huang2021.members.vgg", "huang2021.evaluation.gradcam"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_doctests_of(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
