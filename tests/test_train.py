"""The main command, ``examples/train.py``: every method trains, the run directory is complete,
bad flags are refused, and ``--resume`` continues an interrupted run exactly; the training
objective of each method (``huang2021/training/objective.py``)."""

from __future__ import annotations

import json
import math
import os
import platform
import runpy
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from huang2021.data.splits import digits_splits
from huang2021.measures.clean import CleanScores, comparison
from huang2021.measures.ensemble_pgd import robust_correct
from huang2021.members import DESCRIPTION, build_members
from huang2021.run_dir import save_json
from huang2021.training import loop
from huang2021.training.checkpoints import load_trained_ensembles
from huang2021.training.config import Weights
from huang2021.training.distributed import EnsembleForward
from huang2021.training.methods import METHODS, parse_methods
from huang2021.training.objective import training_objective

from ensemble_diversity import (
    Ensemble,
    PriorityDiversifiedDropout,
    adp_regularizer,
    dispersed_gradient_loss,
    gradient_alignment_loss,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
train = types.SimpleNamespace(**runpy.run_path(str(EXAMPLES / "train.py")))

FAST = ["--max-batches", "2", "--width", "16"]


def run(run_dir: Path, *flags: str):
    return train.main(["--run-dir", str(run_dir), *FAST, *flags])


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def load_ensemble(path: Path, num_members: int = 3) -> Ensemble:
    saved = torch.load(path, weights_only=True)
    ensemble = Ensemble(build_members(num_members, saved["width"], 10))
    ensemble.load_state_dict(saved["ensemble"])
    return ensemble


def record_steps(monkeypatch) -> list[tuple[str, bool, float, int]]:
    """Each training step's (method, with_penalty, penalty, batch size), as the loop calls the objective."""
    steps = []
    objective = loop.training_objective
    names = {method: name for name, method in METHODS.items()}

    def recorded(method, model, images, labels, weights, adversarial=None, *, with_penalty=True, **peer):
        result = objective(method, model, images, labels, weights, adversarial, with_penalty=with_penalty, **peer)
        steps.append((names[method], with_penalty, result.penalty.item(), len(labels)))
        return result

    monkeypatch.setattr(loop, "training_objective", recorded)
    return steps


def logged_penalty(steps: list[tuple[str, bool, float, int]]) -> float:
    """What metrics.jsonl's ``penalty`` must be: the mean over the penalised steps' images (0 without one)."""
    penalised = [(penalty, size) for _, with_penalty, penalty, size in steps if with_penalty]
    return sum(penalty * size for penalty, size in penalised) / max(sum(size for _, size in penalised), 1)


def test_every_method_trains_one_epoch_and_writes_the_run_dir(tmp_path, capsys, monkeypatch):
    methods = list(METHODS)
    steps = record_steps(monkeypatch)
    results = run(tmp_path, "--epochs", "1", "--methods", ",".join(methods))

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["config.json", "metrics.jsonl", "results.json"]
        + [f"checkpoint-{m}.pt" for m in methods]
        + [f"model-{m}.pt" for m in methods]
    )
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["flags"]["methods"] == ",".join(methods)
    assert config["flags"]["seed"] == 0 and config["flags"]["epochs"] == 1
    assert config["flags"]["pdd_scaling"] == "inverted" and config["flags"]["ce_reduction"] == "auto"
    assert set(config["versions"]) == {"python", "torch", "torchvision", "numpy", "scikit-learn", "ensemble_diversity", "cpu"}
    # The instruction set torch's CPU kernels dispatch to and the CPU, which a bit-identical rerun needs too.
    assert config["versions"]["cpu"].startswith(f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}")

    records = lines(tmp_path / "metrics.jsonl")
    assert [r["method"] for r in records] == methods
    for record in records:
        assert set(record) == {"method", "epoch", "loss", "penalty", "train_accuracy", "val_accuracy", "lr", "seconds"}
        assert record["epoch"] == 1 and record["lr"] == 0.02
        assert 0.0 <= record["train_accuracy"] <= 1.0 and 0.0 <= record["val_accuracy"] <= 1.0
    # Each method's logged penalty is its steps' (test_the_penalty_is_the_methods_regulariser
    # checks those), averaged over its 2 steps of 64 images.
    penalty = {r["method"]: r["penalty"] for r in records}
    for name in methods:
        mine = [step for step in steps if step[0] == name]
        assert [(size, with_penalty) for _, with_penalty, _, size in mine] == [(64, True), (64, True)]
        assert penalty[name] == pytest.approx(logged_penalty(mine), rel=1e-6)
    for name in ("baseline", "pdd", "advt-fgsm", "advt-pgd", "advt-fgsm+pdd", "advt-pgd+pdd"):
        assert penalty[name] == 0.0
    for name in ("deg", "pdd+deg", "gal"):  # eq. 3 with K=3: a sum of 3 cosines
        assert penalty[name] != 0.0 and -3.0 <= penalty[name] <= 3.0

    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert list(results["methods"]) == methods
    for row in results["methods"].values():
        assert 0.0 <= row["test_accuracy"] <= 1.0
        assert 0.0 <= row["ambiguity_entropy"] <= 1.0
        assert row["best_epoch"] == 1
    for name in methods:
        ensemble = load_ensemble(tmp_path / f"model-{name}.pt").eval()
        assert ensemble(torch.rand(4, 1, 8, 8)).shape == (4, 10)

    out = capsys.readouterr().out.splitlines()
    assert f"members: K=3 {DESCRIPTION['cnn'].format(width=16)}" in out
    table = out[out.index(next(line for line in out if line.startswith("method "))) :]
    assert [line.split()[0] for line in table[2 : 2 + len(methods)]] == methods


def test_same_seed_gives_every_method_the_same_initial_members(tmp_path):
    # baseline and deg differ only by lambda * L_g: with lambda 0 they must train identically.
    run(tmp_path, "--epochs", "1", "--methods", "baseline,deg", "--deg-lambda", "0")
    baseline = torch.load(tmp_path / "model-baseline.pt", weights_only=True)["ensemble"]
    deg = torch.load(tmp_path / "model-deg.pt", weights_only=True)["ensemble"]
    for key, value in baseline.items():
        assert torch.allclose(value.float(), deg[key].float(), atol=1e-6), key


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--methods", "baseline,dropout"], "--methods"),
        (["--methods", "baseline,baseline"], "--methods"),
        (["--dataset", "mnist"], "--dataset"),
        (["--arch", "resnet50"], "--arch"),
        (["--val-fraction", "0.5"], "--val-fraction"),
        (["--dataset", "cifar100", "--val-fraction", "1.0"], "--val-fraction"),
        (["--eval-batch-size", "0"], "--eval-batch-size"),
        (["--members", "1"], "--members"),
        (["--num-intervals", "3"], "--num-intervals"),
        (["--alpha", "1.5"], "--alpha"),
        (["--epochs", "0"], "--epochs"),
        (["--advt-eps", "-0.01"], "--advt-eps"),
        (["--advt-eps", "0.05", "0.01"], "--advt-eps"),
        (["--advt-eps", "0.01", "0.02", "0.03"], "--advt-eps"),
        (["--advt-eps", "1.5"], "--advt-eps"),
        (["--advt-steps", "0"], "--advt-steps"),
        (["--advt-step-size", "-0.001"], "--advt-step-size"),
        (["--advt-weight", "0"], "--advt-weight"),
        (["--advt-labels", "random"], "--advt-labels"),
        (["--amp", "fp16"], "--amp"),
        (["--deg-every", "0"], "--deg-every"),
        (["--pdd-scaling", "rescaled"], "--pdd-scaling"),
        (["--ce-reduction", "max"], "--ce-reduction"),
    ],
)
def test_bad_flags_are_refused_naming_the_flag(tmp_path, capsys, flags, named):
    with pytest.raises(SystemExit) as exit_info:
        run(tmp_path / "run", *flags)
    assert exit_info.value.code == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_unknown_method_error_lists_the_methods():
    with pytest.raises(ValueError, match="--methods") as error:
        parse_methods("baseline,pdd+trs")
    assert all(name in str(error.value) for name in METHODS)


def test_dataset_error_lists_the_supported_values(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run(tmp_path, "--dataset", "mnist")
    assert "digits" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_device_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run(tmp_path, "--device", "cuda")
    assert "--device" in capsys.readouterr().err


def test_a_new_run_never_writes_into_an_earlier_one(tmp_path, capsys):
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(ValueError, match="--run-dir"):
        run(tmp_path, "--epochs", "1")
    assert (tmp_path / "results.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_resume_continues_exactly_where_the_run_stopped(tmp_path):
    # 3 epochs, so that a scheduler restarted from scratch would show in the last epoch's lr.
    flags = ["--epochs", "3", "--methods", "baseline,pdd+deg,advt-pgd+pdd"]
    whole = run(tmp_path / "whole", *flags)

    split_dir = tmp_path / "split"
    # 4 epochs: all of baseline, the first of pdd+deg.
    assert run(split_dir, *flags, "--stop-after-epochs", "4") is None
    config = (split_dir / "config.json").read_bytes()
    done = [("baseline", 1), ("baseline", 2), ("baseline", 3), ("pdd+deg", 1)]
    assert [(r["method"], r["epoch"]) for r in lines(split_dir / "metrics.jsonl")] == done
    assert not (split_dir / "results.json").exists()
    assert not (split_dir / "model-pdd+deg.pt").exists()
    assert torch.load(split_dir / "checkpoint-pdd+deg.pt", weights_only=True)["epoch"] == 1
    # A second session stops inside adversarial training, whose PGD draws from the RNG.
    assert train.main(["--resume", str(split_dir), "--stop-after-epochs", "3"]) is None
    assert torch.load(split_dir / "checkpoint-advt-pgd+pdd.pt", weights_only=True)["epoch"] == 1

    resumed = train.main(["--resume", str(split_dir)])

    assert (split_dir / "config.json").read_bytes() == config
    records = lines(split_dir / "metrics.jsonl")
    rest = [("pdd+deg", 2), ("pdd+deg", 3), ("advt-pgd+pdd", 1), ("advt-pgd+pdd", 2), ("advt-pgd+pdd", 3)]
    assert [(r["method"], r["epoch"]) for r in records] == done + rest
    assert torch.load(split_dir / "checkpoint-pdd+deg.pt", weights_only=True)["epoch"] == 3
    # Model, optimizer, scheduler and RNG states restored: the same numbers as one session.
    for whole_record, record in zip(lines(tmp_path / "whole" / "metrics.jsonl"), records, strict=True):
        assert {k: v for k, v in record.items() if k != "seconds"} == {k: v for k, v in whole_record.items() if k != "seconds"}
    for name in ("baseline", "pdd+deg", "advt-pgd+pdd"):
        a = load_ensemble(tmp_path / "whole" / f"model-{name}.pt").state_dict()
        b = load_ensemble(split_dir / f"model-{name}.pt").state_dict()
        assert all(torch.equal(a[key], b[key]) for key in a)
        assert resumed["methods"][name]["test_accuracy"] == whole["methods"][name]["test_accuracy"]
    for name in ("pdd+deg", "advt-pgd+pdd"):
        counts = [torch.load(d / f"checkpoint-{name}.pt", weights_only=True)["ensemble"]["pdd.priority_counts"] for d in (tmp_path / "whole", split_dir)]
        assert torch.equal(counts[0], counts[1])
        assert counts[0].sum() > 0


def test_bf16_autocast_trains_and_stays_close_to_float32(tmp_path):
    # One batch of pdd+deg: PDD bins bf16 features in float32, DEG differentiates through autocast.
    flags = ["--epochs", "1", "--max-batches", "1", "--methods", "pdd+deg"]
    full = run(tmp_path / "fp32", *flags)
    half = run(tmp_path / "bf16", *flags, "--amp", "bf16")
    (fp32,), (bf16,) = (lines(tmp_path / d / "metrics.jsonl") for d in ("fp32", "bf16"))
    assert math.isfinite(bf16["loss"]) and math.isfinite(bf16["penalty"])
    # bf16 keeps 8 bits of mantissa (relative rounding 2^-9 per op); 2% covers the network's
    # accumulated rounding with room to spare (measured: see examples/README.md).
    assert bf16["loss"] == pytest.approx(fp32["loss"], rel=0.02)
    assert bf16["loss"] != fp32["loss"]  # autocast was on
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["flags"]["amp"] == "bf16"
    assert list(full["methods"]) == list(half["methods"]) == ["pdd+deg"]
    for results in (full, half):
        assert 0.0 <= results["methods"]["pdd+deg"]["test_accuracy"] <= 1.0


def test_resume_appends_an_epoch_the_log_missed(tmp_path):
    run(tmp_path, "--epochs", "2", "--methods", "pdd", "--stop-after-epochs", "1")
    (tmp_path / "metrics.jsonl").write_text("")  # as if killed between checkpoint and log line
    train.main(["--resume", str(tmp_path)])
    assert [r["epoch"] for r in lines(tmp_path / "metrics.jsonl")] == [1, 2]


def test_resume_refuses_a_different_config(tmp_path, capsys):
    run(tmp_path, "--epochs", "2", "--methods", "baseline", "--stop-after-epochs", "1")
    with pytest.raises(SystemExit):
        train.main(["--resume", str(tmp_path), "--epochs", "3"])
    assert "--epochs" in capsys.readouterr().err
    assert [r["epoch"] for r in lines(tmp_path / "metrics.jsonl")] == [1]


def test_resume_of_a_finished_run_changes_nothing(tmp_path):
    results = run(tmp_path, "--epochs", "1", "--methods", "baseline")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert train.main(["--resume", str(tmp_path)]) == results
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_resume_needs_a_run_directory(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(["--resume", str(tmp_path)])
    assert "--resume" in capsys.readouterr().err


def test_progress_uses_tqdm_when_installed(tmp_path, monkeypatch):
    bars = []

    class FakeBar:
        def __init__(self, total, initial, desc, unit):
            self.desc, self.total, self.updates, self.postfix, self.closed = desc, total, 0, None, False
            bars.append(self)

        def set_postfix(self, values, refresh):
            self.postfix = values

        def update(self, count):
            self.updates += count

        def close(self):
            self.closed = True

    monkeypatch.setitem(sys.modules, "tqdm", types.SimpleNamespace(tqdm=FakeBar))
    run(tmp_path, "--epochs", "2", "--methods", "deg")
    (bar,) = bars
    assert (bar.desc, bar.total, bar.updates, bar.closed) == ("deg", 2, 2, True)
    assert set(bar.postfix) == {"loss", "penalty", "train_acc", "val_acc"}


def test_an_interrupted_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "results.json"
    save_json(path, {"ok": 1})
    with pytest.raises(TypeError):
        save_json(path, {"not json": object()})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_deg_every_n_skips_the_penalty_between_penalised_steps():
    """A step without the penalty is the baseline's step."""
    torch.manual_seed(0)
    model = EnsembleForward(Ensemble(build_members(3, 8, 10)))
    images, labels = torch.rand(6, 1, 8, 8), torch.randint(0, 10, (6,))
    weights = Weights(ce_reduction="mean")
    skipped = training_objective(METHODS["deg"], model, images, labels, weights, with_penalty=False)
    baseline = training_objective(METHODS["baseline"], model, images, labels, weights)
    penalised = training_objective(METHODS["deg"], model, images, labels, weights)
    torch.testing.assert_close(skipped.loss, baseline.loss)
    assert skipped.penalty == 0 and penalised.penalty != 0
    torch.testing.assert_close(penalised.loss, baseline.loss + 0.01 * penalised.penalty)


def test_deg_every_n_penalises_every_nth_step_of_the_run_and_logs_their_mean(tmp_path, monkeypatch):
    """--deg-every 2 over 2 epochs of 3 steps penalises steps 1, 3 and 5 of the run, counted from its
    first step, so a run resumed after the first epoch penalises the same steps."""
    steps = record_steps(monkeypatch)
    flags = ["--epochs", "2", "--max-batches", "3", "--methods", "deg", "--deg-every", "2"]
    run(tmp_path / "whole", *flags)
    assert [with_penalty for _, with_penalty, _, _ in steps] == [True, False, True, False, True, False]
    for record, epoch_steps in zip(lines(tmp_path / "whole" / "metrics.jsonl"), (steps[:3], steps[3:]), strict=True):
        assert record["penalty"] == pytest.approx(logged_penalty(epoch_steps), rel=1e-6) and record["penalty"] != 0
    assert all(penalty == 0.0 for _, with_penalty, penalty, _ in steps if not with_penalty)

    whole = list(steps)
    steps.clear()
    run(tmp_path / "split", *flags, "--stop-after-epochs", "1")
    train.main(["--resume", str(tmp_path / "split")])
    assert steps == whole


@pytest.fixture
def fixed_ensemble():
    """An untrained ensemble in eval mode (deterministic forward passes) and a batch."""
    torch.manual_seed(0)
    ensemble = Ensemble(build_members(3, 8, 10)).eval()
    return ensemble, torch.rand(6, 1, 8, 8), torch.randint(0, 10, (6,))


def test_ce_reduction_auto_sums_the_members_ce_for_adp_only(fixed_ensemble):
    """ADP's weights were tuned against summed members' CE (Pang et al.), the others' against the mean."""
    ensemble, images, labels = fixed_ensemble

    def loss(method: str, reduction: str) -> torch.Tensor:
        return training_objective(METHODS[method], EnsembleForward(ensemble), images, labels, Weights(ce_reduction=reduction)).loss

    member_losses = torch.stack([F.cross_entropy(logits, labels) for logits in ensemble.member_logits(images)])
    regulariser = adp_regularizer(ensemble.member_logits(images), labels, alpha=2.0, beta=0.5).value
    torch.testing.assert_close(loss("baseline", "auto"), member_losses.mean())
    torch.testing.assert_close(loss("baseline", "sum"), member_losses.sum())
    torch.testing.assert_close(loss("adp", "auto"), member_losses.sum() + regulariser)
    torch.testing.assert_close(loss("adp", "mean"), member_losses.mean() + regulariser)


def test_the_penalty_is_the_methods_regulariser(fixed_ensemble):
    """ADP: its regulariser on the members' logits; DEG and GAL: eq. 3's sum and GAL's loss of each
    member's own input gradient, taken here with one backward pass per member; 0 for the others."""
    ensemble, images, labels = fixed_ensemble

    def objective(method: str):
        return training_objective(METHODS[method], EnsembleForward(ensemble), images, labels, Weights(adp_alpha=1.5, adp_beta=0.25))

    grads = []
    for member in ensemble.members:
        x = images.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(member(x), labels), x)
        grads.append(grad)
    grads = torch.stack(grads)  # [K, B, 1, 8, 8]
    expected = {
        "adp": adp_regularizer(ensemble.member_logits(images), labels, alpha=1.5, beta=0.25).value,
        "deg": dispersed_gradient_loss(grads),
        "gal": gradient_alignment_loss(grads),
        "baseline": torch.tensor(0.0),
    }
    for method, penalty in expected.items():
        torch.testing.assert_close(objective(method).penalty, penalty.detach(), rtol=1e-5, atol=1e-6)
    assert -3.0 <= expected["deg"] <= 3.0 and expected["adp"] != 0


def test_pdd_scaling_sets_the_rescaling_of_the_trained_pdd(tmp_path):
    """--pdd-scaling inverted (default) trains with rescale=True, authors with rescale=False; the
    checkpoint's PDD state refuses to load into a PDD of the other scaling."""
    for scaling, rescale in (("inverted", True), ("authors", False)):
        run(tmp_path / scaling, "--epochs", "1", "--max-batches", "1", "--methods", "pdd", *(["--pdd-scaling", scaling] if scaling == "authors" else []))
        ensemble = torch.load(tmp_path / scaling / "checkpoint-pdd.pt", weights_only=True)["ensemble"]
        pdd_state = {key.removeprefix("pdd."): value for key, value in ensemble.items() if key.startswith("pdd.")}
        PriorityDiversifiedDropout(3, rescale=rescale).load_state_dict(pdd_state)
        with pytest.raises(ValueError, match="rescale"):
            PriorityDiversifiedDropout(3, rescale=not rescale).load_state_dict(pdd_state)


def test_training_objective_refuses_an_ensemble_that_does_not_fit_the_method():
    model = EnsembleForward(Ensemble(build_members(3, 8, 10)))
    images, labels = torch.rand(2, 1, 8, 8), torch.randint(0, 10, (2,))
    with pytest.raises(ValueError, match="with PDD"):
        training_objective(METHODS["pdd"], model, images, labels, Weights())


def test_comparison_scores_every_method_on_the_images_all_classify_correctly():
    def evaluation(correct, value):
        correct = torch.tensor(correct)
        return CleanScores(0.5, 0.1, correct, torch.full((4,), value) + torch.arange(4.0), torch.arange(4.0) * value)

    table = comparison({"a": evaluation([True, True, False, True], 1.0), "b": evaluation([True, False, True, True], 2.0)})
    assert (table["test_images"], table["images_correct_for_all_methods"]) == (4, 2)  # images 0 and 3
    assert table["methods"]["a"]["discrimination_score"] == (1.0 + 4.0) / 2
    assert table["methods"]["b"]["gradient_angle_degrees"] == (0.0 + 6.0) / 2


def test_a_run_killed_mid_epoch_resumes_and_loses_at_most_that_epoch(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLES.parent / "src"), os.environ.get("PYTHONPATH", "")])}
    flags = ["--methods", "pdd+deg", "--epochs", "4", "--width", "16"]
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "train.py"), "--run-dir", str(run_dir), *flags],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 120
    try:
        # kill right after the first epoch is logged: the second is then under way
        while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no epoch completed within 120 s"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    completed_before = len(lines(metrics))
    assert 1 <= completed_before < 4

    train.main(["--resume", str(run_dir)])
    epochs = [record["epoch"] for record in lines(metrics)]
    assert epochs == [1, 2, 3, 4]  # every epoch once: none lost, none repeated
    load_ensemble(run_dir / "model-pdd+deg.pt")(torch.rand(2, 1, 8, 8))


def test_the_digits_main_command_needs_no_torchvision(tmp_path):
    """The README's first command installs torch 2.13.0 without torchvision: nothing on the
    digits path may import it (nor ART or matplotlib)."""
    blocker = (
        "import sys, runpy\n"
        "for name in ('torchvision', 'art', 'matplotlib'):\n"
        "    sys.modules[name] = None  # makes `import name` raise ImportError\n"
        f"sys.argv = ['train.py', '--epochs', '1', '--max-batches', '1', '--run-dir', {str(tmp_path / 'run')!r}]\n"
        f"runpy.run_path({str(EXAMPLES / 'train.py')!r}, run_name='__main__')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLES), str(EXAMPLES.parent / "src")])}
    result = subprocess.run([sys.executable, "-c", blocker], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "run" / "results.json").exists()


def test_the_table_has_a_robustness_column_of_pgd_on_all_test_images(tmp_path, capsys):
    # Whole epochs at a high rate: an ensemble accurate enough (about 96 %) for the attack to have something to take.
    flags = ["--width", "16", "--epochs", "4", "--lr", "0.1", "--methods", "baseline", "--robust-eps", "0.05", "0.3", "--robust-steps", "10"]
    results = train.main(["--run-dir", str(tmp_path / "a"), *flags])
    assert results["robustness"]["eps"] == [0.05, 0.3] and results["robustness"]["attack"] == "PGD-10"
    test = digits_splits(0, torch.device("cpu")).test
    for name, row in results["methods"].items():
        robust = row["robust_accuracy"]
        # Robust accuracy counts an image only when it is right before and after the attack.
        assert row["test_accuracy"] > 0.9
        assert robust["0.3"] <= robust["0.05"] <= row["test_accuracy"] and robust["0.3"] < row["test_accuracy"] - 0.5
        members = load_trained_ensembles(tmp_path / "a")[name]
        again = robust_correct(members, test, 0.05, steps=10, seed=0).float().mean().item()
        assert again == pytest.approx(robust["0.05"])  # the column is this attack, seeded by --seed
    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("method "))
    assert "PGD-10 0.05" in header and "PGD-10 0.3" in header

    # The flag with no value leaves the column out.
    results = run(tmp_path / "b", "--epochs", "1", "--methods", "baseline", "--robust-eps")
    assert "robustness" not in results and "robust_accuracy" not in results["methods"]["baseline"]
    assert "PGD" not in next(line for line in capsys.readouterr().out.splitlines() if line.startswith("method "))
