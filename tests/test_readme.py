"""The README's Python blocks run as written, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_python_blocks():
    assert len(python_blocks()) >= 2


def test_readme_python_blocks_run():
    pytest.importorskip("torchvision")  # the quickstart's members; not installed on the torch floor
    namespace: dict[str, object] = {}
    for block in python_blocks():
        exec(compile(block, str(README), "exec"), namespace)


def test_readme_opens_with_the_two_commands():
    lines = README.read_text().splitlines()
    commands = [line for line in lines[:25] if line.startswith("pip install")]
    assert len(commands) >= 2
    assert "examples/train.py" in commands[0]
    assert "pytest" in commands[1]
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "python -m pytest" in ci
    # CI installs what the README's test command installs.
    install = commands[1].split("&&")[0].removeprefix("pip install").strip()
    assert install in ci
