"""The commands that README.md, docs/*.md and examples/README.md name run as written (their
``--help`` at least, with the ``PYTHONPATH`` the line gives), every script and harness module they
name exists, and examples/README.md's map names every module of ``examples/``."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
DOCUMENTS = [ROOT / "README.md", EXAMPLES / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# `python examples/train.py`, `PYTHONPATH=src:examples python benchmarks/train_step.py`,
# `torchrun --nproc_per_node 2 examples/train.py`, `bash benchmarks/gpu.sh`.
COMMAND = re.compile(
    r"(?:\bPYTHONPATH=(?P<path>\S+)\s+)?\b(?:python3?|bash|torchrun(?:\s+--[\w-]+(?:\s+(?!-)(?!examples/)\S+)?)*)"
    r"\s+(?P<script>(?:examples|benchmarks)/[\w/]+\.(?:py|sh))"
)
PATH = re.compile(r"(?<![\w/.-])(?P<path>(?:examples/|benchmarks/|huang2021/)[\w/]*\w\.(?:py|sh))")
DEFAULT_PYTHONPATH = "src"
"""Where a line gives no PYTHONPATH: the library from the source tree (the docs' ``export PYTHONPATH=src``)."""


def documented_commands() -> dict[tuple[str, str], str]:
    """``(script, PYTHONPATH)`` of every command line in the documents -> the first document naming it."""
    found: dict[tuple[str, str], str] = {}
    for document in DOCUMENTS:
        for match in COMMAND.finditer(document.read_text()):
            found.setdefault((match["script"], match["path"] or DEFAULT_PYTHONPATH), str(document.relative_to(ROOT)))
    return found


def test_the_documents_name_every_command():
    scripts = {script for script, _ in documented_commands()}
    commands = {"examples/train.py", "examples/evaluate.py", "examples/diversity.py", "examples/quickstart.py", "examples/torchvision_ensemble.py"}
    benchmarks = {"benchmarks/train_step.py", "benchmarks/pdd_op.py", "benchmarks/gpu_tables.py", "benchmarks/gpu.sh"}
    assert commands | benchmarks <= scripts


def test_every_documented_command_runs_its_help():
    """Each command started as its line writes it (all at once: most of the time is torch's import)."""
    processes = {}
    for (script, path), document in documented_commands().items():
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / part) for part in path.split(":")), "OMP_NUM_THREADS": "1"}
        interpreter = ["bash"] if script.endswith(".sh") else [sys.executable]
        command = [*interpreter, script, "--help"]
        processes[(script, path, document)] = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    failed = []
    for (script, path, document), process in processes.items():
        out, err = process.communicate(timeout=300)
        if process.returncode != 0 or not (out.startswith("usage:") or script.endswith(".sh") and "Options:" in out):
            failed.append(f"PYTHONPATH={path} {script} --help (named in {document}): exit {process.returncode}\n{err[-1500:]}")
    assert not failed, "\n\n".join(failed)


def test_every_script_and_module_the_documents_name_exists():
    missing = []
    for document in [*DOCUMENTS, *sorted(EXAMPLES.glob("*.py")), *sorted((EXAMPLES / "huang2021").rglob("*.py"))]:
        for match in PATH.finditer(document.read_text()):
            path = match["path"]
            if not (ROOT / path).exists() and not (EXAMPLES / path).exists():
                missing.append(f"{document.relative_to(ROOT)}: {path}")
    assert not missing


def _map() -> list[str]:
    """The files in the first column of examples/README.md's map."""
    text = (EXAMPLES / "README.md").read_text()
    section = text[text.index("## Map\n") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE)


def _only_a_docstring(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    return len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)


def test_the_map_names_every_module_of_the_tree_once():
    modules = sorted(
        path.relative_to(EXAMPLES).as_posix()
        for path in EXAMPLES.rglob("*.py")
        if "__pycache__" not in path.parts and not (path.name == "__init__.py" and _only_a_docstring(path))
    )
    named = _map()
    assert len(named) == len(set(named))
    assert sorted(named) == modules
