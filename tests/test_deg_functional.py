"""The functional DEG objectives of benchmarks/deg_functional.py equal the library's eager ``deg_penalty`` path.

Tiny members (ResNet-18 layout at base width 2, BatchNorm in training mode) in float64, so
"equal" means equal to rounding: the penalty, the members' losses, every parameter's gradient
of eq. 4's objective (double backprop) and BatchNorm's running statistics after the step. The
compiled check runs on the ``aot_eager`` backend (AOTAutograd's tracing without inductor's code
generation) and is marked slow. No timing is asserted.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.func import stack_module_state

from ensemble_diversity import deg_penalty

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
pytestmark = pytest.mark.usefixtures("one_thread")
K = 3


def load_benchmark():
    spec = importlib.util.spec_from_file_location("deg_functional", BENCHMARKS / "deg_functional.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


deg_functional = load_benchmark()


@pytest.fixture
def batch() -> tuple[list[nn.Module], torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    members = [deg_functional.resnet18_member(width=2, num_classes=5).double() for _ in range(K)]
    return members, torch.randn(4, 3, 8, 8, dtype=torch.float64), torch.randint(0, 5, (4,))


def eager_reference(members, x, y):
    """Eq. 4 through ``deg_penalty``: (penalty, losses, per-member parameter gradients, per-member running statistics)."""
    models = [copy.deepcopy(member) for member in members]
    out = deg_penalty(models, x, y)
    (out.losses.mean() + deg_functional.DEG_LAMBDA * out.penalty).backward()
    grads = [[p.grad for p in model.parameters()] for model in models]
    stats = [[b for b in model.buffers() if b.is_floating_point()] for model in models]
    return out.penalty.detach(), out.losses.detach(), grads, stats


def loop_objective(members, x, y, objective_fn=None):
    """The per-member functional objective on copies of ``members``; same four results as :func:`eager_reference`."""
    models = [copy.deepcopy(member) for member in members]
    template = copy.deepcopy(models[0]).to("meta")
    params = [dict(model.named_parameters()) for model in models]
    buffers = [dict(model.named_buffers()) for model in models]
    out = (objective_fn or deg_functional.functional_deg_objective)(template, params, buffers, x, y)
    out.objective.backward()
    grads = [[p.grad for p in model.parameters()] for model in models]
    stats = [[b for b in model.buffers() if b.is_floating_point()] for model in models]
    return out.penalty.detach(), out.losses.detach(), grads, stats


def vmap_objective(members, x, y, objective_fn=None):
    """The vectorised functional objective on the stacked ``members``; same four results, unstacked per member."""
    stacked_params, buffers = stack_module_state([copy.deepcopy(member) for member in members])
    params = {name: nn.Parameter(value.detach()) for name, value in stacked_params.items()}
    template = copy.deepcopy(members[0]).to("meta")
    out = (objective_fn or deg_functional.vectorized_deg_objective)(template, params, buffers, x, y)
    out.objective.backward()
    names = [name for name, _ in members[0].named_parameters()]
    stat_names = [name for name, value in members[0].named_buffers() if value.is_floating_point()]
    grads = [[params[name].grad[k] for name in names] for k in range(K)]
    stats = [[buffers[name][k] for name in stat_names] for k in range(K)]
    return out.penalty.detach(), out.losses.detach(), grads, stats


def assert_equal_to_rounding(result, reference):
    penalty, losses, grads, stats = result
    ref_penalty, ref_losses, ref_grads, ref_stats = reference
    torch.testing.assert_close(penalty, ref_penalty, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(losses, ref_losses, rtol=1e-10, atol=1e-12)
    for member, ref_member in zip(grads, ref_grads, strict=True):
        for grad, ref_grad in zip(member, ref_member, strict=True):
            torch.testing.assert_close(grad, ref_grad, rtol=1e-8, atol=1e-12)
    for member, ref_member in zip(stats, ref_stats, strict=True):
        for stat, ref_stat in zip(member, ref_member, strict=True):
            torch.testing.assert_close(stat, ref_stat, rtol=1e-10, atol=1e-12)


def test_the_members_are_cifar_stem_resnet18s():
    member = deg_functional.resnet18_member(width=8, num_classes=100)
    assert member(torch.zeros(2, 3, 32, 32)).shape == (2, 100)
    assert sum(isinstance(module, nn.Conv2d) for module in member.modules()) == 1 + 16 + 3  # stem, 8 blocks, 3 shortcuts
    assert member[0].stride == (1, 1) and not any(isinstance(module, nn.MaxPool2d) for module in member.modules())


@pytest.mark.parametrize("objective", [loop_objective, vmap_objective], ids=["per member", "vmap"])
def test_functional_penalty_and_its_parameter_gradients_equal_deg_penalty(batch, objective):
    members, x, y = batch
    reference = eager_reference(members, x, y)
    assert reference[0].abs() > 0 and all(grad.abs().sum() > 0 for grad in reference[2][0])  # a real double backprop
    assert_equal_to_rounding(objective(members, x, y), reference)


@pytest.mark.parametrize("objective", [loop_objective, vmap_objective], ids=["per member", "vmap"])
def test_functional_objective_updates_running_statistics_like_the_eager_members(batch, objective):
    members, x, y = batch
    before = [b.clone() for b in members[0].buffers() if b.is_floating_point()]
    _, _, _, stats = objective(members, x, y)
    assert any(not torch.equal(stat, old) for stat, old in zip(stats[0], before))  # the step moved them
    assert all(torch.equal(b, old) for b, old in zip((b for b in members[0].buffers() if b.is_floating_point()), before))  # on copies


@pytest.mark.slow
@pytest.mark.parametrize("objective", [loop_objective, vmap_objective], ids=["per member", "vmap"])
def test_compiled_functional_objective_equals_deg_penalty(batch, objective):
    """The penalty's parameter gradient as the first-order backward of a compiled graph holding the input gradients."""
    members, x, y = batch
    torch._dynamo.reset()
    plain = deg_functional.functional_deg_objective if objective is loop_objective else deg_functional.vectorized_deg_objective
    compiled = torch.compile(plain, backend="aot_eager", fullgraph=True)
    assert_equal_to_rounding(objective(members, x, y, compiled), eager_reference(members, x, y))


def test_benchmark_writes_its_table_with_exactness(tmp_path):
    out = tmp_path / "deg_functional.json"
    argv = ["--steps", "baseline,deg,deg functional,deg functional vmap", "--width", "2", "--batch-size", "4"]
    result = deg_functional.main([*argv, "--image-size", "8", "--rounds", "1", "--warmup", "0", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert list(result["rows"]) == ["baseline", "deg", "deg functional", "deg functional vmap"] and not result["failures"]
    assert result["rows"]["baseline"]["ratio_to_baseline"] == 1.0
    for name in ("deg functional", "deg functional vmap"):
        assert result["rows"][name]["exactness_vs_deg"]["parameter_gradients"] < 1e-4
        assert result["rows"][name]["exactness_vs_deg"]["penalty"] < 1e-5
