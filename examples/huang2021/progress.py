"""Per-epoch progress: a tqdm bar per method when tqdm is installed, one printed line per epoch otherwise."""

from __future__ import annotations

from typing import Any


class EpochProgress:
    """Report each completed epoch of one method; ``close()`` when the method is done."""

    def __init__(self, method: str, start_epoch: int, epochs: int) -> None:
        self.method = method
        self.epochs = epochs
        self.bar = _tqdm_bar(method, start_epoch, epochs)

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


def _tqdm_bar(method: str, start_epoch: int, epochs: int) -> Any | None:
    """A tqdm bar over the method's epochs, or None when tqdm is not installed (it is optional)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=epochs, initial=start_epoch, desc=method, unit="epoch")
