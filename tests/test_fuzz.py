"""Every public function and constructor, fed generated bad (and good) input.

What must hold for any input: the call either returns, or raises ``ValueError``/``TypeError``
whose message names an argument in backticks (never an ``IndexError``, ``RuntimeError`` or a
torch internal error from deep inside); and finite floating input gives finite output. Each
test also makes a call that is valid by construction (:func:`valid_shapes`), which must return:
a function that refused everything would otherwise pass.
"""

from __future__ import annotations

import math
import re

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import ensemble_diversity as ed

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.uint8, torch.bool, torch.complex64]
NAMED_ARGUMENT = re.compile(r"`[\w\[\].=]+`")


@st.composite
def tensors(draw, *, min_dims: int = 0, max_dims: int = 4, max_side: int = 4) -> Tensor:
    """A small tensor of any dtype and shape (empty axes included), sometimes holding NaN or inf."""
    shape = draw(st.lists(st.integers(0, max_side), min_size=min_dims, max_size=max_dims))
    dtype = draw(st.sampled_from(DTYPES))
    values = torch.randn(shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 2**16)))) * 3
    if values.numel() and draw(st.booleans()) and draw(st.booleans()):
        values.view(-1)[0] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    if dtype == torch.bool:
        return values > 0
    if not (dtype.is_floating_point or dtype.is_complex):
        return values.nan_to_num(0.0, 7.0, -7.0).round().to(dtype)
    return values.to(dtype)


@st.composite
def member_tensors(draw, *, dims: int) -> Tensor:
    """Mostly well-formed ``[K, B, ...]`` float tensors with ``dims`` axes, often with one thing wrong."""
    if draw(st.booleans()):
        return draw(tensors(min_dims=max(dims - 1, 0), max_dims=dims + 1))
    shape = [draw(st.integers(0, 4)) for _ in range(dims)]
    return torch.randn(shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 2**16))))


def labels(batch_hint: int = 4) -> st.SearchStrategy[Tensor]:
    return st.one_of(
        tensors(max_dims=2),
        st.lists(st.integers(-2, 6), min_size=0, max_size=batch_hint + 1).map(lambda v: torch.tensor(v, dtype=torch.long)),
    )


def finite_float(value: object) -> bool:
    return isinstance(value, Tensor) and value.is_floating_point() and bool(torch.isfinite(value).all())


def outputs(result: object) -> list[Tensor]:
    if isinstance(result, Tensor):
        return [result]
    if isinstance(result, tuple):
        return [item for item in result if isinstance(item, Tensor)]
    return []


def valid_shapes() -> st.SearchStrategy[tuple[int, int, int, int]]:
    """``(K, B, D, seed)``: at least 2 members, at least 1 image, at least 2 units (classes), and a seed for the values."""
    return st.tuples(st.integers(2, 4), st.integers(1, 4), st.integers(2, 4), st.integers(0, 2**16))


def valid_members(shape: tuple[int, int, int, int]) -> tuple[Tensor, Tensor]:
    """A finite float32 ``[K, B, D]`` tensor and labels ``[B]`` in ``[0, D)``: input every function here must take."""
    members, batch, units, seed = shape
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(members, batch, units, generator=generator), torch.randint(units, (batch,), generator=generator)


def check_call(function, *args, must_return: bool = False, **kwargs) -> object:
    """Call, and hold the call to the contract in this module's docstring; ``must_return``: the input is valid, so the call may not raise."""
    try:
        result = function(*args, **kwargs)
    except (ValueError, TypeError) as error:
        assert not must_return, f"{getattr(function, '__name__', function)} refused valid input: {error}"
        assert NAMED_ARGUMENT.search(str(error)), f"{type(error).__name__} names no argument: {error}"
        return None
    inputs = [value for value in [*args, *kwargs.values()] if isinstance(value, Tensor)]
    if inputs and all(finite_float(value) for value in inputs if value.is_floating_point()) and any(
        value.is_floating_point() for value in inputs
    ):
        for out in outputs(result):
            if out.is_floating_point():
                assert bool(torch.isfinite(out).all()), f"non-finite output for finite input: {out}"
    return result


@SETTINGS
@given(
    grads=member_tensors(dims=3), num_members=st.one_of(st.none(), st.integers(-1, 4)), eps=st.sampled_from([1e-12, 0.0, -1.0, math.nan, True]),
    valid=valid_shapes(),
)  # fmt: skip
def test_pairwise_gradient_functions(grads, num_members, eps, valid):
    good, _ = valid_members(valid)
    for function in (ed.dispersed_gradient_loss, ed.gradient_alignment_loss, ed.gradient_angles):
        check_call(function, grads, eps=eps, num_members=num_members)
        check_call(function, good, must_return=True)
        check_call(function, good, num_members=len(good), must_return=True)


@SETTINGS
@given(logits=member_tensors(dims=3), targets=labels(), num_members=st.one_of(st.none(), st.integers(0, 4)), valid=valid_shapes())
def test_functions_of_logits_and_labels(logits, targets, num_members, valid):
    check_call(ed.ambiguity_entropy, logits, targets, num_members=num_members)
    check_call(ed.ensemble_cross_entropy, logits, targets, num_members=num_members)
    check_call(ed.ensemble_cross_entropy, logits, targets, member_reduction="none")
    check_call(ed.adp_regularizer, logits, targets, num_members=num_members)
    good, good_labels = valid_members(valid)
    for function in (ed.ambiguity_entropy, ed.ensemble_cross_entropy, ed.adp_regularizer):
        check_call(function, good, good_labels, must_return=True)
    check_call(ed.ensemble_cross_entropy, good, good_labels, member_reduction="none", must_return=True)


@SETTINGS
@given(features=member_tensors(dims=3), num_members=st.one_of(st.none(), st.integers(0, 4)), valid=valid_shapes())
def test_discrimination_score(features, num_members, valid):
    check_call(ed.discrimination_score, features, num_members=num_members)
    good, _ = valid_members(valid)
    check_call(ed.discrimination_score, good, must_return=True)
    check_call(ed.discrimination_score, good, num_members=len(good), must_return=True)


@SETTINGS
@given(
    num_members=st.one_of(st.integers(-1, 5), st.booleans(), st.floats(0, 4)),
    num_intervals=st.one_of(st.none(), st.integers(-1, 12)),
    alpha=st.one_of(st.floats(-1, 2), st.just(math.nan), st.booleans()),
    beta=st.one_of(st.floats(-1, 2), st.just(math.nan)),
    statistics=st.sampled_from(["sample", "batch", "Sample", None]),
    sync=st.booleans(),
    features=member_tensors(dims=3),
    valid=valid_shapes(),
)
def test_priority_diversified_dropout(num_members, num_intervals, alpha, beta, statistics, sync, features, valid):
    pdd = check_call(
        ed.PriorityDiversifiedDropout, num_members, num_intervals, alpha, beta, statistics=statistics, sync_statistics=sync
    )
    if pdd is not None:
        check_call(pdd, features)
        check_call(pdd.keep_probabilities, features)
        check_call(pdd.eval(), features)
    good, _ = valid_members(valid)
    valid_pdd = check_call(ed.PriorityDiversifiedDropout, len(good), must_return=True)
    for call in (valid_pdd, valid_pdd.keep_probabilities, valid_pdd.eval()):
        check_call(call, good, must_return=True)


@SETTINGS
@given(num_members=st.one_of(st.integers(-1, 6), st.booleans()))
def test_default_num_intervals_and_member_inputs(num_members):
    try:
        intervals = ed.default_num_intervals(num_members)
    except (ValueError, TypeError) as error:
        assert NAMED_ARGUMENT.search(str(error))
    else:
        assert intervals > num_members or num_members < 2
    check_call(ed.member_inputs, torch.randn(2, 3), num_members)


class Flat(nn.Module):
    """A small classifier on ``[B, 3]``: its output can be given another shape or dtype to test the checks."""

    def __init__(self, out: int = 3, *, extra_axis: bool = False, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 5, dtype=dtype), nn.Tanh())
        self.fc = nn.Linear(5, out, dtype=dtype)
        self.extra_axis = extra_axis

    def forward(self, x: Tensor) -> Tensor:
        logits = self.fc(self.body(x))
        return logits.unsqueeze(-1) if self.extra_axis else logits


@st.composite
def model_inputs(draw, *, floating_only: bool = False) -> Tensor:
    """``[B, 3]`` inputs of any dtype and batch size (empty too), sometimes non-finite: what the
    library can check. An input the members themselves cannot take (integers for a float model:
    token ids are legal for others) raises the members' own error, hence ``floating_only``."""
    x = draw(tensors(min_dims=2, max_dims=2))
    if not x.is_floating_point():
        return torch.zeros(x.shape[0], 3) if floating_only else x
    return x[:, :1].expand(x.shape[0], 3) if x.shape[1] else x.new_zeros((x.shape[0], 3))


@st.composite
def model_lists(draw) -> list[nn.Module]:
    num_members = draw(st.integers(0, 3))
    torch.manual_seed(draw(st.integers(0, 2**16)))
    models: list[nn.Module] = [Flat() for _ in range(num_members)]
    if models and draw(st.booleans()):
        odd = draw(st.sampled_from(["classes", "axis", "float64", "hardsigmoid", "not a module"]))
        last = {
            "classes": lambda: Flat(out=4),
            "axis": lambda: Flat(extra_axis=True),
            "float64": lambda: Flat(dtype=torch.float64),
            "hardsigmoid": lambda: nn.Sequential(nn.Linear(3, 3), nn.Hardsigmoid()),
            "not a module": lambda: (lambda x: x),
        }[odd]()
        models[-1] = last
    return models


@SETTINGS
@given(
    models=model_lists(),
    x=model_inputs(),
    y=labels(),
    wrap=st.booleans(),
    graph=st.booleans(),
    fraction=st.sampled_from([1.0, 0.5, 1e-3, 0.0, 2.0, math.nan]),
    valid=valid_shapes(),
)
def test_gradient_penalties(models, x, y, wrap, graph, fraction, valid):
    members, batch, _, seed = valid
    torch.manual_seed(seed)
    good_models, good_x = [Flat() for _ in range(members)], torch.randn(batch, 3)
    good_y = torch.randint(3, (batch,))
    for penalty in (ed.deg_penalty, ed.gal_penalty):
        check_call(penalty, good_models, good_x, good_y, must_return=True)
    target = models
    if wrap:
        target = check_call(ed.Ensemble, models, pdd=check_call(ed.PriorityDiversifiedDropout, max(len(models), 2)))
        if target is None:
            return
    for penalty in (ed.deg_penalty, ed.gal_penalty):
        check_call(penalty, target, x, y, create_graph=graph, penalty_fraction=fraction)


@SETTINGS
@given(
    models=model_lists(),
    head=st.sampled_from([None, "fc", "body.0", "body.1", "nope", "", 3]),
    combine=st.sampled_from(["probabilities", "logits", "mean"]),
    x=model_inputs(floating_only=True),
    with_pdd=st.booleans(),
    valid=valid_shapes(),
)
def test_ensemble(models, head, combine, x, with_pdd, valid):
    pdd = ed.PriorityDiversifiedDropout(max(len(models), 2)) if with_pdd else None
    ensemble = check_call(ed.Ensemble, models, pdd=pdd, head=head, combine=combine)
    if ensemble is not None:
        check_call(ensemble, x)
        check_call(ensemble.member_outputs, x)
        check_call(ensemble.member_outputs, x, per_member=True)
    members, batch, _, seed = valid
    torch.manual_seed(seed)
    good = check_call(ed.Ensemble, [Flat() for _ in range(members)], pdd=ed.PriorityDiversifiedDropout(members) if with_pdd else None, must_return=True)
    good_x = torch.randn(batch, 3)
    for call in (good, good.member_outputs, good.member_logits):
        check_call(call, good_x, must_return=True)


@SETTINGS
@given(losses=st.one_of(member_tensors(dims=1), tensors()), inputs=st.one_of(member_tensors(dims=2), tensors()), per_member=st.booleans())
def test_member_input_gradients(losses, inputs, per_member):
    check_call(ed.member_input_gradients, losses, inputs, per_member=per_member)


@SETTINGS
@given(
    models=model_lists(),
    x=model_inputs(),
    y=labels(),
    eps=st.sampled_from([0.1, 0.0, -0.1, math.nan, math.inf]),
    steps=st.sampled_from([1, 2, 0, -1, True, 1.5]),
    clean_fraction=st.sampled_from([0.5, 0.0, 1.0, -0.5, 2.0, math.nan]),
    smooth=st.booleans(),
    valid=valid_shapes(),
)
def test_trs(models, x, y, eps, steps, clean_fraction, smooth, valid):
    members, batch, _, seed = valid
    torch.manual_seed(seed)
    good_models, good_x, good_y = [Flat() for _ in range(members)], torch.rand(batch, 3), torch.randint(3, (batch,))
    good_smooth = check_call(ed.trs_perturbation, good_models, good_x, good_y, eps=0.1, steps=2, must_return=True)
    check_call(ed.trs_terms, good_models, good_x, good_y, x_smooth=good_smooth, must_return=True)
    x_smooth = check_call(ed.trs_perturbation, models, x, y, eps=eps, steps=steps, clean_fraction=clean_fraction)
    check_call(ed.trs_terms, models, x, y, x_smooth=x_smooth if smooth else None)


@SETTINGS
@given(
    models=model_lists(),
    source=model_inputs(floating_only=True),
    target=model_inputs(floating_only=True),
    y=labels(),
    eps=st.sampled_from([0.1, 0.0, -0.1, math.nan, math.inf]),
    steps=st.sampled_from([1, 2, 0, -1, True]),
    layer=st.sampled_from([None, "fc", "body.0", "body.1", "nope", ""]),
    valid=valid_shapes(),
)
def test_dverge(models, source, target, y, eps, steps, layer, valid):
    members, batch, _, seed = valid
    torch.manual_seed(seed)
    good_models, good_source, good_y = [Flat() for _ in range(members)], torch.rand(batch, 3), torch.randint(3, (batch,))
    distilled = check_call(ed.feature_distillation, good_models, good_source, good_source.roll(1, 0), eps=0.1, step_size=0.01, steps=2, must_return=True)
    check_call(ed.dverge_loss, good_models, distilled, good_y, must_return=True)
    check_call(ed.distillation_features, good_models, distilled, layer="body.0", must_return=True)
    distilled = check_call(ed.feature_distillation, models, source, target, eps=eps, step_size=0.01, steps=steps, layer=layer)
    member_batches = distilled if distilled is not None else source  # [K, B, 3], or a wrong shape to refuse
    check_call(ed.distillation_features, models, member_batches, layer=layer)
    check_call(ed.dverge_loss, models, member_batches, y)


@SETTINGS
@given(
    layers=st.one_of(st.lists(st.one_of(st.none(), st.text(max_size=3)), max_size=3), st.text(max_size=3), st.none()),
    seed=st.one_of(st.integers(-2, 5), st.booleans(), st.floats(allow_nan=True)),
    epoch=st.one_of(st.integers(-2, 5), st.booleans()),
)
def test_draw_layer(layers, seed, epoch):
    drawn = check_call(ed.draw_layer, layers, seed=seed, epoch=epoch)
    if drawn is not None:
        assert drawn in layers
    check_call(ed.draw_layer, ["a", None], seed=0, epoch=0, must_return=True)
