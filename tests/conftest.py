"""The ``--library-only`` and ``--installed`` options; shared fixtures.

The harness (``examples/huang2021``) and the benchmarks' ``machine`` are importable because
pyproject.toml's ``pythonpath`` puts ``examples/`` and ``benchmarks/`` on the path, as running
their scripts does.

The library's own tests and the harness's tests share ``tests/``. A test module is a harness
module when its source names the harness: ``huang2021``, an import of ``machine``, or the
``"examples"``/``"benchmarks"`` folder as a path part. ``python -m pytest --library-only``
does not even import those modules (their top-level imports need the extras: scikit-learn,
torchvision, ART) and runs the library's tests and the doctests in ``src/``; CI runs that on
the oldest torch the library declares, in a venv without the extras. A new test file is sorted
by its own source, with no list to edit; a library test that needs an extra skips where it is
missing.

``--installed`` is for a run against a built wheel: the session stops before any test runs
unless every ``ensemble_diversity`` module it imported (the tests' and the doctests') comes from
the environment's site-packages, none from ``src/``, and the installed distribution carries its
version and ``py.typed``. Give it the installed package as a path for its doctests, never
``src/`` (the ``testpaths``): ``python -m pytest --library-only --installed tests <site-packages>/ensemble_diversity``.

Hypothesis runs derandomized by default (profile ``default``): every run tries the same
examples, so a suite that passed passes again and CI cannot fail on a new random draw. To hunt
for new failures, ``python -m pytest --hypothesis-profile=explore`` draws fresh random examples
(more of them); a failure it finds gets a fix and, where the derandomized draws miss it, a
plain test.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
import sysconfig
from functools import cache
from pathlib import Path

import pytest
import torch
from hypothesis import settings

settings.register_profile("default", derandomize=True)
settings.register_profile("explore", derandomize=False, max_examples=1000)
settings.load_profile("default")

ROOT = Path(__file__).resolve().parents[1]

HARNESS_SOURCE = re.compile(r"\bhuang2021\b|^\s*(?:from|import)\s+machine\b|([\"'])(?:examples|benchmarks)\1", re.MULTILINE)


@cache
def is_harness_module(path: Path) -> bool:
    """Whether the test module at ``path`` exercises the harness (examples/, benchmarks/)."""
    return path.suffix == ".py" and path.name.startswith("test_") and bool(HARNESS_SOURCE.search(path.read_text()))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--library-only", action="store_true", help="skip the harness's test modules (examples/, benchmarks/)")
    parser.addoption(
        "--installed",
        action="store_true",
        help="stop unless ensemble_diversity is imported from an installed wheel (site-packages), not from src/",
    )


def pytest_report_header() -> str:
    import ensemble_diversity

    return f"torch {torch.__version__}, ensemble_diversity {ensemble_diversity.__version__} from {Path(ensemble_diversity.__file__).parent}"


def installed_package_problems() -> list[str]:
    """What keeps this session from testing an installed ``ensemble_diversity`` (empty: nothing)."""
    import ensemble_diversity

    problems = []
    site_packages = Path(sysconfig.get_paths()["purelib"]).resolve()
    package = Path(ensemble_diversity.__file__).resolve().parent
    if not package.is_relative_to(site_packages):
        problems.append(f"ensemble_diversity was imported from {package}, not from {site_packages}")
    source = (ROOT / "src").resolve()
    from_source = sorted(
        name for name, module in list(sys.modules.items()) if Path(getattr(module, "__file__", None) or "/").resolve().is_relative_to(source)
    )
    if from_source:
        problems.append(f"modules imported from {source}: {', '.join(from_source)}")
    installed = importlib.metadata.version("ensemble-diversity")
    if ensemble_diversity.__version__ != installed:
        problems.append(f"ensemble_diversity.__version__ is {ensemble_diversity.__version__!r} but the distribution's is {installed!r}")
    if not (package / "py.typed").is_file():
        problems.append(f"{package} has no py.typed")
    return problems


def pytest_collection_finish(session: pytest.Session) -> None:
    # Collection has imported every test module and every module whose doctests run.
    if session.config.getoption("installed") and (problems := installed_package_problems()):
        pytest.exit("--installed: " + "; ".join(problems), returncode=pytest.ExitCode.USAGE_ERROR)


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
