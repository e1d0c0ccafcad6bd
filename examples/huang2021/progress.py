"""Progress: a tqdm bar when tqdm is installed (it is optional), printed lines or nothing otherwise.

- :class:`EpochProgress`: a bar per method over its epochs, or one line per epoch (training);
- :func:`batch_progress`: a bar over the images of one attack (the robustness evaluation).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class EpochProgress:
    """Report each completed epoch of one method; ``close()`` when the method is done."""

    def __init__(self, method: str, start_epoch: int, epochs: int) -> None:
        self.method = method
        self.epochs = epochs
        bar = _tqdm()
        self.bar = None if bar is None else bar(total=epochs, initial=start_epoch, desc=method, unit="epoch")

    def update(self, record: dict[str, Any]) -> None:
        summary = {
            "loss": f"{record['loss']:.3f}",
            "penalty": f"{record['penalty']:.3f}",
            "train_acc": f"{record['train_accuracy']:.3f}",
            "val_acc": f"{record['val_accuracy']:.3f}",
        }
        if self.bar is not None:
            self.bar.set_postfix(summary, refresh=False)
            self.bar.update(1)
            return
        fields = " ".join(f"{key} {value}" for key, value in summary.items())
        print(f"[{self.method}] epoch {record['epoch']}/{self.epochs} {fields} ({record['seconds']:.1f}s)", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _tqdm() -> Any | None:
    """tqdm's bar class, or None when tqdm is not installed."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


def batch_progress(description: str, total: int, batch_size: int) -> Iterator[slice]:
    """Batches of ``batch_size`` of ``total`` images, with a tqdm bar over images when tqdm is installed."""
    bar = _tqdm()
    bar = None if bar is None else bar(total=total, desc=description, unit="img")
    try:
        for start in range(0, total, batch_size):
            yield slice(start, start + batch_size)
            if bar is not None:
                bar.update(min(batch_size, total - start))
    finally:
        if bar is not None:
            bar.close()
