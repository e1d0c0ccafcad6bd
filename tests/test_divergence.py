"""A diverging method stops with one clear message and a usable run directory; a failed write
keeps the previous checkpoint, says what failed, and the run resumes exactly (``examples/train.py``)."""

from __future__ import annotations

import errno
import json
import math
import runpy
import types
from pathlib import Path

import pytest
import torch
from huang2021 import run_dir as run_dir_module
from huang2021.training import loop

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
train = types.SimpleNamespace(**runpy.run_path(str(EXAMPLES / "train.py")))

FAST = ["--max-batches", "4", "--width", "16", "--epochs", "3"]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_seconds(records: list[dict]) -> list[dict]:
    return [{key: value for key, value in record.items() if key != "seconds"} for record in records]


def test_the_issues_diverging_command_stops_every_method_in_its_first_epoch(tmp_path, capsys):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as stopped:
        train.main(["--methods", "baseline,pdd+deg", "--lr", "1e4", "--epochs", "3", "--width", "16", "--run-dir", str(run_dir)])
    assert "diverged: baseline, pdd+deg" in str(stopped.value.code)  # a message: exit status 1
    out = capsys.readouterr().out
    for name in ("baseline", "pdd+deg"):
        assert f"{name} diverged in epoch 1, step " in out
    assert "--lr 10000.0" in out and "no epoch completed" in out
    assert "Traceback" not in out
    # A usable run directory: its config, no results of an incomplete run.
    assert (run_dir / "config.json").exists() and not (run_dir / "results.json").exists()


def nan_loss_at(monkeypatch, call: int) -> None:
    """The training objective's ``call``-th call (1-based) returns a NaN loss whose gradient is
    still the real one: only the on-device flag can tell (the library's checks see finite values)."""
    objective = loop.training_objective
    calls = [0]

    def patched(*args, **kwargs):
        calls[0] += 1
        out = objective(*args, **kwargs)
        return out._replace(loss=out.loss + math.nan) if calls[0] == call else out

    monkeypatch.setattr(loop, "training_objective", patched)


def test_a_nan_loss_is_caught_by_the_device_flag_and_the_last_good_checkpoint_resumes(tmp_path, capsys, monkeypatch):
    flags = [*FAST, "--methods", "baseline,deg"]
    whole = tmp_path / "whole"
    train.main(["--run-dir", str(whole), *flags])

    run_dir = tmp_path / "run"
    nan_loss_at(monkeypatch, call=4 + 3)  # epoch 2, step 3 of baseline (4 steps per epoch)
    with pytest.raises(SystemExit, match="diverged: baseline"):
        train.main(["--run-dir", str(run_dir), *flags])
    out = capsys.readouterr().out
    assert "baseline diverged in epoch 2, step 3: its training loss was nan" in out
    assert "the checkpoint of epoch 1, with the best members so far, is kept" in out
    # The other method trained; the diverged one kept its epoch-1 checkpoint and log line.
    assert torch.load(run_dir / "checkpoint-baseline.pt", weights_only=True)["epoch"] == 1
    assert torch.load(run_dir / "checkpoint-deg.pt", weights_only=True)["epoch"] == 3
    assert [(r["method"], r["epoch"]) for r in lines(run_dir / "metrics.jsonl")][:2] == [("baseline", 1), ("deg", 1)]

    monkeypatch.undo()
    resumed = train.main(["--resume", str(run_dir)])
    assert (run_dir / "results.json").exists()
    by_method = lambda records: sorted(records, key=lambda r: (r["method"], r["epoch"]))  # noqa: E731
    assert without_seconds(by_method(lines(run_dir / "metrics.jsonl"))) == without_seconds(by_method(lines(whole / "metrics.jsonl")))
    assert resumed["methods"]["baseline"]["test_accuracy"] == json.loads((whole / "results.json").read_text())["methods"]["baseline"]["test_accuracy"]


def test_a_failed_checkpoint_write_keeps_the_previous_one_and_the_run_resumes_exactly(tmp_path, monkeypatch):
    flags = [*FAST, "--methods", "pdd+deg"]
    whole = tmp_path / "whole"
    train.main(["--run-dir", str(whole), *flags])

    run_dir = tmp_path / "run"
    save = torch.save
    saves = [0]

    def disk_full_on_the_second_checkpoint(value, file, *args, **kwargs):
        saves[0] += 1
        if saves[0] == 2:
            file.write(b"half a checkpoint")  # part-way, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(value, file, *args, **kwargs)

    monkeypatch.setattr(run_dir_module.torch, "save", disk_full_on_the_second_checkpoint)
    with pytest.raises(OSError, match=r"writing .*checkpoint-pdd\+deg\.pt failed \(No space left on device\); its previous version, if any, is intact") as failed:
        train.main(["--run-dir", str(run_dir), *flags])
    assert failed.value.errno == errno.ENOSPC
    monkeypatch.undo()

    saved = torch.load(run_dir / "checkpoint-pdd+deg.pt", weights_only=True)
    assert saved["epoch"] == 1 and saved["ensemble"]["pdd.priority_counts"].sum() > 0
    assert not [path.name for path in run_dir.iterdir() if path.name.endswith(".tmp")]
    assert [r["epoch"] for r in lines(run_dir / "metrics.jsonl")] == [1]

    train.main(["--resume", str(run_dir)])
    assert without_seconds(lines(run_dir / "metrics.jsonl")) == without_seconds(lines(whole / "metrics.jsonl"))
    for name in ("checkpoint-pdd+deg.pt", "model-pdd+deg.pt"):
        a, b = (torch.load(d / name, weights_only=True)["ensemble"] for d in (whole, run_dir))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[key], b[key]) if isinstance(a[key], torch.Tensor) else a[key] == b[key] for key in a)
