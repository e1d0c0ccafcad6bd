"""PDD (Algorithm 1, eq. 2) against a brute-force reading of the paper, plus its properties."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ensemble_diversity import PriorityDiversifiedDropout, default_num_intervals


def reference_keep_rates(features: np.ndarray, num_intervals: int, alpha: float, beta: float, statistics: str = "sample") -> np.ndarray:
    """Eq. 2 with loops, written from Algorithm 1: one histogram per sample (or per batch)."""
    num_members, batch, units = features.shape
    groups = [[b] for b in range(batch)] if statistics == "sample" else [list(range(batch))]
    rates = np.zeros(features.shape)
    for samples in groups:
        values = features[:, samples, :]
        low, high = values.min(), values.max()

        def interval_of(a: np.float32) -> int:
            if high == low:
                return 0
            # float32 arithmetic in the library's order, so that edge cases land alike
            position = (np.float32(a) - low) * np.float32(num_intervals) / (high - low)
            return min(int(np.floor(position)), num_intervals - 1)

        member_counts = [Counter(interval_of(a) for a in values[k].ravel()) for k in range(num_members)]
        ensemble_counts = sum(member_counts, Counter())
        ranked = sorted(range(num_intervals), key=lambda m: (-ensemble_counts[m], m))
        for k in range(num_members):
            priority = ranked[k]
            total = sum(member_counts[k].values())
            for b in samples:
                for c in range(units):
                    m = interval_of(features[k, b, c])
                    rates[k, b, c] = alpha if m == priority else beta * (1 - member_counts[k][m] / total)
    return rates


def features_strategy(max_members: int = 5, max_batch: int = 4, max_units: int = 12):
    shapes = st.tuples(st.integers(2, max_members), st.integers(1, max_batch), st.integers(1, max_units))
    values = st.floats(-4, 4, width=32, allow_nan=False, allow_infinity=False)
    # few distinct values make ties and empty intervals common, the cases most likely to be wrong
    pooled = st.sampled_from([0.0, 0.0, 0.5, 1.0, 1.0, 2.5, 3.0])
    return shapes.flatmap(lambda s: arrays(np.float32, s, elements=st.one_of(values, pooled)))


# --- hand-checked cases -------------------------------------------------------------------


def test_hand_checked_example():
    # u=0, v=3, M=3: member 0 falls in intervals [0, 1, 2, 2], member 1 in [0, 0, 2, 2].
    # Ensemble counts: interval 2 -> 4, interval 0 -> 3, interval 1 -> 1, so t_0 = 2, t_1 = 0.
    features = torch.tensor([[[0.0, 1.0, 2.0, 3.0]], [[0.0, 0.0, 3.0, 3.0]]])
    pdd = PriorityDiversifiedDropout(2, num_intervals=3, alpha=0.9, beta=0.1)
    stats = pdd.priority_statistics(features)
    assert stats.interval.tolist() == [[[0, 1, 2, 2]], [[0, 0, 2, 2]]]
    assert stats.priority_interval.tolist() == [[2], [0]]
    assert stats.member_counts.tolist() == [[[1, 1, 2]], [[2, 0, 2]]]
    expected = torch.tensor([[[0.075, 0.075, 0.9, 0.9]], [[0.9, 0.9, 0.05, 0.05]]])
    torch.testing.assert_close(stats.keep_rate, expected)


def test_ties_go_to_the_lower_interval():
    # Intervals 0 and 2 both hold 2 units; interval 0 ranks first.
    features = torch.tensor([[[0.0, 3.0]], [[0.0, 3.0]]])
    stats = PriorityDiversifiedDropout(2, num_intervals=3).priority_statistics(features)
    assert stats.priority_interval.tolist() == [[0], [2]]


def test_equal_activations_put_every_unit_in_interval_zero():
    features = torch.full((3, 2, 5), 0.7)
    stats = PriorityDiversifiedDropout(3, alpha=0.9, beta=0.1).priority_statistics(features)
    assert stats.interval.eq(0).all()
    assert stats.priority_interval.tolist() == [[0, 0], [1, 1], [2, 2]]
    # member 0 keeps its units with alpha; the others hold all C units in one non-priority
    # interval, so beta * (1 - C/C) = 0
    torch.testing.assert_close(stats.keep_rate[0], torch.full((2, 5), 0.9))
    assert stats.keep_rate[1:].eq(0).all()


def test_all_zero_relu_output_is_finite_and_kept_by_member_zero_only():
    features = torch.zeros(3, 4, 8)
    rates = PriorityDiversifiedDropout(3).keep_probabilities(features)
    assert torch.isfinite(rates).all()
    assert rates[0].eq(0.9).all() and rates[1:].eq(0).all()


def test_fewer_occupied_intervals_than_members_gives_empty_priorities():
    # Only intervals 0 and 9 are occupied; member 2 gets the empty interval 1 (lowest index).
    features = torch.tensor([[[0.0, 1.0, 1.0]], [[0.0, 1.0, 0.0]], [[1.0, 1.0, 1.0]]])
    stats = PriorityDiversifiedDropout(3, num_intervals=10).priority_statistics(features)
    assert stats.priority_interval[:, 0].tolist() == [9, 0, 1]
    assert torch.isfinite(stats.keep_rate).all()
    # member 2 has no unit in its priority interval, so every unit of it gets beta*(1 - N/C)
    torch.testing.assert_close(stats.keep_rate[2], torch.zeros(1, 3))


def test_default_intervals_match_the_paper():
    assert PriorityDiversifiedDropout(3).num_intervals == 10
    assert PriorityDiversifiedDropout(5).num_intervals == 20
    assert all(default_num_intervals(k) > k for k in range(2, 50))


# --- against the brute-force reference ----------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(features=features_strategy(), data=st.data())
def test_keep_rates_match_reference(features, data):
    num_members = features.shape[0]
    num_intervals = data.draw(st.integers(num_members + 1, num_members + 12), label="num_intervals")
    alpha = data.draw(st.floats(0, 1), label="alpha")
    beta = data.draw(st.floats(0, 1), label="beta")
    statistics = data.draw(st.sampled_from(["sample", "batch"]), label="statistics")
    pdd = PriorityDiversifiedDropout(num_members, num_intervals, alpha, beta, statistics=statistics)
    got = pdd.keep_probabilities(torch.from_numpy(features))
    expected = reference_keep_rates(features, num_intervals, alpha, beta, statistics)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-7)


# --- properties ---------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(features=features_strategy(), statistics=st.sampled_from(["sample", "batch"]))
def test_statistics_properties(features, statistics):
    num_members, batch, units = features.shape
    pdd = PriorityDiversifiedDropout(num_members, alpha=0.8, beta=0.3, statistics=statistics)
    stats = pdd.priority_statistics(torch.from_numpy(features))
    # keep rates are probabilities
    assert ((stats.keep_rate >= 0) & (stats.keep_rate <= 1)).all()
    # counts add up to C_k: every unit of every member in exactly one interval
    units_per_group = units if statistics == "sample" else units * batch
    assert stats.member_counts.sum(-1).eq(units_per_group).all()
    assert ((stats.interval >= 0) & (stats.interval < pdd.num_intervals)).all()
    # t_1 != ... != t_K in every histogram
    assert all(len(set(column)) == num_members for column in stats.priority_interval.T.tolist())
    # a unit in its member's priority interval gets alpha; every other unit at most beta
    # [K, G, 1] broadcasts against [K, B, C] for G = B and for G = 1
    in_priority = stats.interval == stats.priority_interval.unsqueeze(-1)
    assert stats.keep_rate[in_priority].eq(torch.tensor(0.8)).all()
    assert (stats.keep_rate[~in_priority] <= 0.3 + 1e-7).all()


@settings(max_examples=40, deadline=None)
@given(features=features_strategy(), seed=st.integers(0, 2**16))
def test_equivariant_under_permuting_units(features, seed):
    num_members, _, units = features.shape
    generator = torch.Generator().manual_seed(seed)
    # each member's units permuted independently: histograms only count units
    perms = torch.stack([torch.randperm(units, generator=generator) for _ in range(num_members)])
    x = torch.from_numpy(features)
    index = perms[:, None, :].expand_as(x)
    pdd = PriorityDiversifiedDropout(num_members)
    torch.testing.assert_close(pdd.keep_probabilities(x.gather(2, index)), pdd.keep_probabilities(x).gather(2, index), rtol=0, atol=0)


@settings(max_examples=30, deadline=None)
@given(features=features_strategy(), seed=st.integers(0, 2**16))
def test_member_permutation_keeps_the_ensemble_histogram(features, seed):
    num_members = features.shape[0]
    perm = torch.randperm(num_members, generator=torch.Generator().manual_seed(seed))
    x = torch.from_numpy(features)
    pdd = PriorityDiversifiedDropout(num_members)
    stats, permuted = pdd.priority_statistics(x), pdd.priority_statistics(x[perm])
    # the top-K intervals are chosen on ensemble counts, which ignore member order; which
    # member gets which of them follows the member order (member k gets the k-th largest)
    torch.testing.assert_close(permuted.member_counts, stats.member_counts[perm], rtol=0, atol=0)
    torch.testing.assert_close(permuted.priority_interval, stats.priority_interval, rtol=0, atol=0)


def test_sample_statistics_do_not_depend_on_other_samples():
    torch.manual_seed(0)
    a, b = torch.relu(torch.randn(3, 4, 32)), torch.relu(torch.randn(3, 6, 32)) * 5
    pdd = PriorityDiversifiedDropout(3)
    joint = pdd.keep_probabilities(torch.cat([a, b], dim=1))
    torch.testing.assert_close(joint, torch.cat([pdd.keep_probabilities(a), pdd.keep_probabilities(b)], dim=1))


@pytest.mark.parametrize("statistics", ["sample", "batch"])
def test_empirical_keep_frequency_agrees_with_keep_probabilities(statistics):
    torch.manual_seed(1)
    base = torch.rand(3, 1, 40) + 0.05  # strictly positive: a zero output means dropped
    draws = 4000
    pdd = PriorityDiversifiedDropout(3, alpha=0.9, beta=0.6, statistics=statistics)
    # the same sample repeated: identical statistics per copy in both modes
    repeated = base.expand(3, draws, 40).contiguous()
    frequency = (pdd(repeated) != 0).double().mean(dim=1)
    p = pdd.keep_probabilities(base)[:, 0].double()
    bound = 5 * torch.sqrt(p * (1 - p) / draws) + 1 / draws  # 5 sigma for each of 120 units
    assert ((frequency - p).abs() <= bound).all(), (frequency - p).abs().max()


def test_authors_scaling_multiplies_by_a_binary_mask_and_gradients_flow_through_kept_units():
    torch.manual_seed(2)
    features = (torch.rand(3, 5, 16) + 0.1).requires_grad_(True)
    out = PriorityDiversifiedDropout(3, rescale=False)(features)
    mask = out.detach() / features.detach()
    assert torch.isin(mask, torch.tensor([0.0, 1.0])).all()
    out.sum().backward()
    torch.testing.assert_close(features.grad, mask)


def test_rescale_divides_kept_units_by_their_keep_rate():
    torch.manual_seed(3)
    features = torch.rand(3, 2000, 8) + 0.1
    pdd = PriorityDiversifiedDropout(3, beta=0.5, statistics="batch", rescale=True)
    out = pdd(features)
    rates = pdd.keep_probabilities(features)
    kept = out != 0
    torch.testing.assert_close(out[kept], (features / rates)[kept])
    # inverted dropout keeps each unit's expectation: check over units with a usable keep rate
    ratio = (out / features)[rates > 0.05].mean()
    assert abs(ratio.item() - 1) < 0.05


def test_default_rescaling_keeps_each_units_expectation_within_a_binomial_bound():
    # Inverted dropout (the default): out = x / p * Bernoulli(p), so over N draws of the same
    # sample each unit's mean output is x with standard error x * sqrt((1 - p) / (p N)).
    torch.manual_seed(4)
    base = torch.rand(3, 1, 40) + 0.05
    draws = 4000
    pdd = PriorityDiversifiedDropout(3, beta=0.6)
    assert pdd.rescale
    out = pdd(base.expand(3, draws, 40).contiguous())
    p = pdd.keep_probabilities(base)[:, 0].double()
    x = base[:, 0].double()
    usable = p > 0  # a unit with keep rate 0 is always dropped: no rescaling brings it back
    assert usable.float().mean() > 0.5
    mean = out.double().mean(dim=1)
    bound = 5 * x * torch.sqrt((1 - p) / (p.clamp_min(1e-12) * draws)) + 1e-6
    assert ((mean - x).abs() <= bound)[usable].all(), ((mean - x).abs() / bound)[usable].max()
    assert (mean[~usable] == 0).all()


def test_eval_mode_is_the_identity():
    features = torch.rand(3, 4, 8)
    pdd = PriorityDiversifiedDropout(3).eval()
    assert pdd(features) is features
    assert pdd.priority_counts.eq(0).all()


def test_sequence_input_equals_stacked_input():
    features = torch.rand(3, 4, 8)
    pdd = PriorityDiversifiedDropout(3)
    torch.testing.assert_close(pdd.keep_probabilities(list(features)), pdd.keep_probabilities(features))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_low_and_high_precision_features(dtype):
    torch.manual_seed(4)
    features = torch.relu(torch.randn(3, 4, 64)).to(dtype)
    pdd = PriorityDiversifiedDropout(3)
    rates = pdd.keep_probabilities(features)
    # the histogram sees the same values as a float32 (float64) copy would
    torch.testing.assert_close(rates, pdd.keep_probabilities(features.to(torch.promote_types(dtype, torch.float32))))
    out = pdd(features)
    assert out.dtype == dtype and torch.isfinite(out).all()


def test_priority_counts_tally_each_sample_and_round_trip_through_state_dict():
    torch.manual_seed(5)
    pdd = PriorityDiversifiedDropout(3)
    features = torch.relu(torch.randn(3, 6, 32))
    pdd(features)
    pdd(features)
    assert pdd.priority_counts.sum(1).eq(12).all()  # 2 calls x 6 samples, per member
    expected = torch.zeros(3, 10, dtype=torch.long)
    expected.scatter_add_(1, pdd.priority_statistics(features).priority_interval, torch.full((3, 6), 2))
    torch.testing.assert_close(pdd.priority_counts, expected)

    restored = PriorityDiversifiedDropout(3)
    restored.load_state_dict(pdd.state_dict())
    torch.testing.assert_close(restored.priority_counts, pdd.priority_counts)


def test_state_dict_from_other_settings_is_refused():
    state = PriorityDiversifiedDropout(3, alpha=0.8).state_dict()
    with pytest.raises(ValueError, match="alpha"):
        PriorityDiversifiedDropout(3, alpha=0.9).load_state_dict(state)


def test_extra_repr_prints_the_settings():
    text = repr(PriorityDiversifiedDropout(5, alpha=0.7, statistics="batch", rescale=True))
    for part in ["num_members=5", "num_intervals=20", "alpha=0.7", "beta=0.1", "statistics='batch'", "rescale=True"]:
        assert part in text


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_members": 1}, "num_members"),
        ({"num_members": True}, "num_members"),
        ({"num_members": 3.0}, "num_members"),
        ({"num_members": 3, "num_intervals": 3}, "num_intervals.*num_members=3"),
        ({"num_members": 3, "num_intervals": 2}, "num_intervals"),
        ({"num_members": 3, "alpha": 1.5}, "alpha"),
        ({"num_members": 3, "alpha": -0.1}, "alpha"),
        ({"num_members": 3, "beta": float("nan")}, "beta"),
        ({"num_members": 3, "statistics": "epoch"}, "statistics"),
        ({"num_members": 3, "sync_statistics": True}, "statistics"),
    ],
)
def test_bad_settings_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PriorityDiversifiedDropout(**kwargs)


@pytest.mark.parametrize(
    ("features", "error", "match"),
    [
        (torch.rand(3, 8), ValueError, r"features.*\[K, B, C\]"),
        (torch.rand(4, 2, 8), ValueError, "num_members=3.*K=4"),
        (torch.rand(3, 0, 8), ValueError, "batch"),
        (torch.rand(3, 2, 0), ValueError, "unit"),
        (torch.ones(3, 2, 8, dtype=torch.long), TypeError, "features.*floating"),
        (torch.tensor([[[float("nan")]]] * 3), ValueError, "features.*NaN"),
        (torch.tensor([[[float("inf")]]] * 3), ValueError, "features.*inf"),
        ([torch.rand(2, 8), torch.rand(2, 8), torch.rand(2, 7)], ValueError, "features.*shape"),
        ("features", TypeError, "features"),
    ],
)
def test_bad_features_raise(features, error, match):
    pdd = PriorityDiversifiedDropout(3)
    with pytest.raises(error, match=match):
        pdd(features)
    with pytest.raises(error, match=match):
        pdd.keep_probabilities(features)


def test_finite_check_can_be_switched_off():
    features = torch.rand(3, 2, 8)
    features[0, 0, 0] = float("nan")
    rates = PriorityDiversifiedDropout(3, check_finite=False).keep_probabilities(features)
    assert ((rates >= 0) & (rates <= 1)).all()  # in range, not an index error


# --- member handles -----------------------------------------------------------------------


# --- torch.compile and devices ------------------------------------------------------------


@pytest.mark.slow
def test_compiles_with_fullgraph_in_training_mode():
    torch.manual_seed(8)
    pdd = PriorityDiversifiedDropout(3, beta=0.5, rescale=False)
    compiled = torch.compile(pdd, fullgraph=True)
    features = torch.relu(torch.randn(3, 16, 64)) + 0.01
    expected_rates = pdd.keep_probabilities(features)
    out = compiled(features)
    mask = out / features
    assert torch.isin(mask, torch.tensor([0.0, 1.0])).all()
    # A Bernoulli draw at the keep rates, not a constant mask: 3072 draws, so the share kept is
    # within 0.05 of the mean rate (about 5 standard errors), and units are dropped.
    assert (mask == 0).any() and abs(mask.mean().item() - expected_rates.mean().item()) < 0.05
    assert pdd.priority_counts.sum().item() == 3 * 16
    rates = torch.compile(pdd.keep_probabilities, fullgraph=True)(features)
    torch.testing.assert_close(rates, pdd.keep_probabilities(features))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_without_host_synchronisation():
    torch.manual_seed(9)
    features = torch.relu(torch.randn(5, 128, 512))
    pdd = PriorityDiversifiedDropout(5)
    expected = pdd.keep_probabilities(features)
    pdd = pdd.cuda()
    gpu_features = features.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        rates = pdd.keep_probabilities(gpu_features)
        out = pdd(gpu_features)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(rates.cpu(), expected)
    assert out.shape == features.shape

