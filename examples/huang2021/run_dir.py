"""The run directory: every file a run writes, written so that an interruption never leaves half a file.

Layout of ``RUN_DIR``:

- ``config.json``: the resolved flags and the library versions of the session that started the run;
- ``metrics.jsonl``: one line per method per completed epoch (append-only);
- ``checkpoint-<method>.pt``: the latest completed epoch of a method (models, optimizer,
  scheduler, RNG states, best-so-far model, epoch history), replaced atomically each epoch;
- ``model-<method>.pt``: the kept model (best validation accuracy) of a finished method;
- ``results.json``: the final comparison table.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import torch

import ensemble_diversity

CONFIG = "config.json"
METRICS = "metrics.jsonl"
RESULTS = "results.json"


def checkpoint_path(run_dir: Path, method: str) -> Path:
    return run_dir / f"checkpoint-{method}.pt"


MODEL_PREFIX = "model-"


def model_path(run_dir: Path, method: str) -> Path:
    return run_dir / f"{MODEL_PREFIX}{method}.pt"


def create_run_dir(path: Path) -> Path:
    """Create ``path`` for a new run; refuse a directory that already holds files (an earlier run's)."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ValueError(
            f"Expected --run-dir to be a new or empty directory, but {str(path)!r} already holds files; "
            f"continue that run with --resume {path} or pick another --run-dir"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def library_versions() -> dict[str, str]:
    """Versions of everything that can change a number in the run's results."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _installed_version("torchvision"),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "ensemble_diversity": _package_version(),
        "cpu": _cpu(),
    }


def _cpu() -> str:
    """The instruction set torch dispatches to and the CPU's model name, e.g. "x86_64 AVX512 (AMD EPYC)".

    The kernels torch and its math libraries pick differ by both, so the same seed, flags,
    thread count and versions retrain bit-identically only on such a CPU (docs/evaluation.md).
    """
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.partition(":")[2].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")] if cpuinfo.exists() else []
    model = names[0] if names else platform.processor()
    return f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}" + (f" ({model})" if model else "")


def _installed_version(distribution: str) -> str:
    """An optional dependency's version, or "not installed" (torchvision is not needed on digits)."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _package_version() -> str:
    try:
        return metadata.version("ensemble-diversity")
    except metadata.PackageNotFoundError:  # run from a source tree with PYTHONPATH=src
        return getattr(ensemble_diversity, "__version__", "unknown")


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str) -> None:
    """Write through ``write(file)`` to a temporary file beside ``path``, then rename it over ``path``.

    ``os.replace`` within one directory is atomic, so ``path`` holds either the old or the new
    content, never a prefix of the new one.
    """
    # A fixed name per process (rather than tempfile's, created 0600) keeps the umask's
    # permissions; one process writes a run directory at a time.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open(mode) as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        # A full disk or a lost permission: say which file, and that its last version survived.
        raise OSError(
            error.errno, f"writing {path} failed ({error.strerror or error}); its previous version, if any, is intact"
        ) from error
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def save_json(path: Path, value: Any) -> None:
    save_text(path, json.dumps(value, indent=2) + "\n")


def save_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda file: file.write(text), "w")


def save_bytes(path: Path, data: bytes) -> None:
    _atomic_write(path, lambda file: file.write(data), "wb")


def save_png(path: Path, figure: Any) -> None:
    """Save a matplotlib ``figure`` (anything with ``savefig``) as PNG, atomically."""
    _atomic_write(path, lambda file: figure.savefig(file, format="png"), "wb")


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())


def save_torch(path: Path, value: Any) -> None:
    _atomic_write(path, lambda file: torch.save(value, file), "wb")


def load_torch(path: Path) -> Any:
    # Everything saved here is tensors, numbers, strings and containers of them.
    return torch.load(path, map_location="cpu", weights_only=True)


def append_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """Append ``records`` as lines; earlier lines are never rewritten."""
    with path.open("a") as file:
        for record in records:
            file.write(json.dumps(record) + "\n")
        file.flush()
        os.fsync(file.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
