"""``exact_many``, the reductions of many groups' stacked outputs: each group's measurement the same bytes as
``Reductions.exact`` of that group alone, over the N-d hyperparameter space, smooth and kinked activations, real
input and weight groups, single entries (the audit's) and channel groups whose owners repeat (several output
channels per entry)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from convcheck.numeric.groups import Group, Ownership, input_groups, single_entry_groups, weight_groups
from convcheck.numeric.reduce import Measurement, Reductions, exact_many
from convcheck.results import Tensor
from convcheck.spec import Activation, ConvShape
from tests.strategies import nd_geometries

EPS = 2.0**-10
FIELDS = ("central", "lo", "hi", "crossed", "noise", "truncation")


def perturbed(f0: np.ndarray, groups: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``f⁺`` and ``f⁻`` of ``groups`` groups, ``(groups, *f0.shape)`` (``f0``: ``(N, *O, C_out)``): moved by
    about ``ε`` around ``f0``, with the two sides' slopes different by at least 1 at about one output in five
    (what a kink's crossing looks like)."""
    slope = rng.standard_normal((groups, *f0.shape))
    kink = np.where(rng.random(slope.shape) < 0.2, 1.0 + rng.random(slope.shape), 0.0)
    return f0 + EPS * (slope + kink), f0 - EPS * slope


def channels_by_three(c_out: int) -> list[Group]:
    """Three channel groups with one entry per three output channels: owners that repeat (``count < C_out``), each
    entry's sum of three terms depending on the order they are added in."""
    owner = np.arange(c_out) // 3
    count = int(owner.max()) + 1
    return [Group(Tensor.WEIGHTS, np.arange(count), Ownership.CHANNEL, owner) for _ in range(3)]


def assert_same_as_one_by_one(reductions: Reductions, groups: list[Group], rng: np.random.Generator) -> None:
    counts = [len(group.entries) for group in groups]
    f_plus, f_minus = perturbed(reductions.f0, len(groups), rng)
    for k, group in enumerate(groups):  # outputs that no perturbed entry reaches stay put (a local forward)
        if group.unowned is not None:
            still = reductions.f0[group.unowned]
            f_plus[k][group.unowned], f_minus[k][group.unowned] = still, still
    together = exact_many(reductions, groups, counts, f_plus, f_minus, EPS)
    assert together is not None
    for k, group in enumerate(groups):
        alone = reductions.exact(group, counts[k], f_plus[k], f_minus[k], EPS)
        got: Measurement = together[k]
        for name in FIELDS:
            assert getattr(got, name).tobytes() == getattr(alone, name).tobytes(), (k, name)
    if not reductions.smooth:  # every output whose slopes differ, and that an entry owns, is judged by its interval
        kinked = np.abs((f_plus - reductions.f0) - (reductions.f0 - f_minus)) > EPS / 2
        owned = [np.ones(reductions.f0.shape, bool) if g.unowned is None else ~g.unowned[..., None] for g in groups]
        want = sum(int((kinked[k] & owned[k]).sum()) for k in range(len(groups)))
        assert sum(int(m.crossed.sum()) for m in together) == want


@settings(max_examples=60, deadline=None)
@given(
    shape=nd_geometries(max_size=7),
    activation=st.sampled_from([Activation.RELU, Activation.TANH, Activation.SIGMOID]),
    seed=st.integers(0, 2**32 - 1),
)
def test_groups_reduced_together_measure_as_each_alone(shape: ConvShape, activation: Activation, seed: int) -> None:
    rng = np.random.default_rng(seed)
    f0 = rng.standard_normal(shape.out_shape)
    g = rng.standard_normal(shape.out_shape)
    sigma = 1e-16 * (1 + np.abs(f0))
    reductions = Reductions(f0, g, sigma, EPS, activation, (1.0, 1.0, 1.0))
    if shape.groups == 1:  # input groups of several conv groups own per output (not reduced together)
        assert_same_as_one_by_one(reductions, list(input_groups(shape)), rng)
    entries = np.arange(min(5, shape.in_depth * shape.batch))
    assert_same_as_one_by_one(reductions, list(single_entry_groups(Tensor.INPUT, entries)), rng)
    if shape.out_depth >= 2:
        assert_same_as_one_by_one(reductions, list(weight_groups(shape)), rng)
        assert_same_as_one_by_one(reductions, channels_by_three(shape.out_depth), rng)
