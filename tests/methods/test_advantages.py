"""Rewards, group baselines and advantages against hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from realjudge.methods import (
    UNPARSABLE,
    binary_reward,
    clip_advantages,
    gold_to_score_index,
    group_mean_advantages,
    group_rewards_view,
    group_std,
    leave_one_out_baseline,
    loo_advantages,
    normalize_by_group_std,
    probability_reward,
    real_advantages,
    regression_reward,
    tied_groups,
)
from realjudge.methods.losses import RealLossConfig

SCORES = torch.arange(1.0, 6.0)
# two groups of G=4: sums 12 and 0
REWARDS = torch.tensor([1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 4.0, -4.0])


def test_group_view_layout_and_errors() -> None:
    v = group_rewards_view(REWARDS, 4)
    assert v.shape == (2, 4)
    assert v[1].tolist() == [0.0, 0.0, 4.0, -4.0]  # group-major
    with pytest.raises(ValueError):
        group_rewards_view(REWARDS, 3)
    with pytest.raises(ValueError):
        group_rewards_view(REWARDS, 0)
    with pytest.raises(ValueError):
        group_rewards_view(REWARDS.view(2, 4), 4)


def test_leave_one_out_baseline_hand_computed() -> None:
    b = leave_one_out_baseline(REWARDS, 4)
    expected = [11 / 3, 10 / 3, 3.0, 2.0, 0.0, 0.0, -4 / 3, 4 / 3]
    torch.testing.assert_close(b, torch.tensor(expected))
    adv = loo_advantages(REWARDS, 4)
    torch.testing.assert_close(
        adv, torch.tensor([-8 / 3, -4 / 3, 0.0, 4.0, 0.0, 0.0, 16 / 3, -16 / 3])
    )


def test_loo_is_rescaled_group_mean() -> None:
    g = 4
    torch.testing.assert_close(
        loo_advantages(REWARDS, g), g / (g - 1) * group_mean_advantages(REWARDS, g)
    )
    torch.testing.assert_close(
        group_mean_advantages(REWARDS, g), torch.tensor([-2.0, -1.0, 0.0, 3.0, 0.0, 0.0, 4.0, -4.0])
    )


def test_group_size_one_gives_zero_advantage_and_no_nan() -> None:
    r = torch.tensor([0.3, -2.0, 5.0])
    torch.testing.assert_close(leave_one_out_baseline(r, 1), r)
    assert loo_advantages(r, 1).abs().max() == 0
    assert group_mean_advantages(r, 1).abs().max() == 0
    assert group_std(r, 1).abs().max() == 0
    normed = normalize_by_group_std(loo_advantages(r, 1), 1, std_of=r)
    assert torch.isfinite(normed).all() and normed.abs().max() == 0


def test_std_normalisation_hand_computed() -> None:
    std1 = math.sqrt((4 + 1 + 0 + 9) / 3)  # unbiased std of [1, 2, 3, 6]
    std2 = math.sqrt((0 + 0 + 16 + 16) / 3)  # of [0, 0, 4, -4]
    adv = group_mean_advantages(REWARDS, 4)
    out = normalize_by_group_std(adv, 4, eps=0.0, std_of=REWARDS)
    expected = torch.tensor([-2 / std1, -1 / std1, 0.0, 3 / std1, 0.0, 0.0, 4 / std2, -4 / std2])
    torch.testing.assert_close(out, expected)
    # the default normalises by the values' own std
    loo = loo_advantages(REWARDS, 4)
    torch.testing.assert_close(normalize_by_group_std(loo, 4, eps=0.0), out)
    # a group with equal rewards stays at zero (eps avoids 0/0)
    flat = torch.tensor([2.0, 2.0, 2.0, 1.0, 3.0, 2.0])
    out2 = normalize_by_group_std(group_mean_advantages(flat, 3), 3, std_of=flat)
    assert out2[:3].abs().max() == 0
    torch.testing.assert_close(out2[3:], torch.tensor([-1.0, 1.0, 0.0]), atol=1e-5, rtol=0)


# a float32 reward shared by all 8 rollouts of a group (half of all float32 values in (-1, 0)
# make the naive float32 LOO baseline of 8 equal rewards miss by an ulp; this is one of them)
TIED = torch.full((8,), -0.9999, dtype=torch.float32)


@pytest.mark.parametrize("g", [2, 3, 7, 8])
def test_a_group_with_one_reward_gets_exactly_zero_advantage(g: int) -> None:
    rewards = torch.cat([TIED[:1].expand(g), torch.arange(g, dtype=torch.float32)])
    assert tied_groups(rewards, g).tolist() == [True] * g + [False] * g
    for adv in (loo_advantages(rewards, g), group_mean_advantages(rewards, g)):
        assert adv.dtype == torch.float32
        assert adv[:g].tolist() == [0.0] * g  # bit for bit, not a rounding error
        # ... so no eps, however small, turns it into a signal
        normed = normalize_by_group_std(adv, g, eps=1e-12, std_of=rewards)
        assert normed[:g].tolist() == [0.0] * g
        assert normed[g:].abs().max() > 0.1


def test_float32_loo_of_equal_rewards_was_a_rounding_error() -> None:
    """The case the exact zero guards against: the naive float32 LOO baseline of eight equal
    rewards is off by an ulp, and dividing by (std 0 + 1e-6) made it an advantage of ~0.06."""
    total = TIED.sum()
    naive = TIED - (total - TIED) / 7
    assert naive.abs().max() > 0  # the rounding error exists in float32
    assert (naive.abs().max() / 1e-6) > 0.01
    assert loo_advantages(TIED, 8).abs().max() == 0


def test_std_eps_bounds_how_far_tiny_differences_are_blown_up() -> None:
    # one group whose rewards differ by ~1e-6 (float32 noise of a nearly sure judge), one real
    noise = torch.tensor([-1e-6, 0.0, 1e-6, 0.0], dtype=torch.float32)
    real = torch.tensor([-1.0, 0.0, -4.0, 0.0])
    rewards = torch.cat([noise, real])
    adv = loo_advantages(rewards, 4)
    small = normalize_by_group_std(adv, 4, eps=1e-6, std_of=rewards)
    large = normalize_by_group_std(adv, 4, eps=1e-4, std_of=rewards)
    assert small[:4].abs().max() > 0.5  # noise as loud as a real difference
    assert large[:4].abs().max() < 0.02  # damped by s / (s + eps)
    torch.testing.assert_close(small[4:], large[4:], rtol=1e-3, atol=0)  # real ones barely move


def test_real_advantages_of_a_sure_judge_are_zero() -> None:
    """A judge that puts all its mass on one score in all 8 rollouts: REAL's advantages (both
    parts, default config) are exactly zero and the group counts as tied."""
    probs = torch.zeros(16, 5)
    probs[:8, 3] = 1.0  # says 4; gold 5
    probs[8:, 4] = 1.0  # says 5; gold 5
    gold = torch.full((16,), 5.0)
    adv, metrics = real_advantages(probs, SCORES, gold, 8, RealLossConfig())
    assert adv.abs().max().item() == 0.0
    assert metrics["frac_groups_zero_std"] == 1.0
    assert RealLossConfig().std_eps == 1e-4
    # with std normalisation a zero epsilon would turn this tied group into 0/0
    with pytest.raises(ValueError, match="std_eps"):
        RealLossConfig(std_eps=0.0)
    assert RealLossConfig(std_eps=0.0, normalize_std=False).std_eps == 0.0


def test_clip_advantages() -> None:
    a = torch.tensor([-3.0, -0.5, 0.0, 0.99, 2.0])
    torch.testing.assert_close(clip_advantages(a, 1.0), torch.tensor([-1.0, -0.5, 0.0, 0.99, 1.0]))
    assert clip_advantages(a, None) is a
    with pytest.raises(ValueError):
        clip_advantages(a, 0.0)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-10, 10), min_size=2, max_size=6),
    st.integers(1, 3),
    st.floats(-10, 10),
)
def test_loo_properties(group: list[float], n_groups: int, new_value: float) -> None:
    g = len(group)
    r = torch.tensor(group * n_groups, dtype=torch.float64)
    adv = loo_advantages(r, g)
    # within-group advantages sum to zero
    assert group_rewards_view(adv, g).sum(1).abs().max() < 1e-9
    # b_i does not depend on r_i (up to float rounding of sum-minus-self)
    r2 = r.clone()
    r2[0] = new_value
    assert abs(leave_one_out_baseline(r2, g)[0] - leave_one_out_baseline(r, g)[0]) < 1e-9


def test_gold_to_score_index_rounding() -> None:
    gold = torch.tensor([4.33, 4.5, 3.67, 0.2, 7.0, 1.0, 2.5, 1.49, 5.0])
    idx = gold_to_score_index(gold, SCORES)
    assert idx.dtype == torch.long
    assert idx.tolist() == [3, 4, 3, 0, 4, 0, 2, 0, 4]
    # non-unit scale, ties up
    half = torch.tensor([0.0, 0.5, 1.0])
    assert gold_to_score_index(torch.tensor([0.25, 0.74, 0.76, -1.0]), half).tolist() == [
        1,
        1,
        2,
        0,
    ]
    # works on extra leading dims
    assert gold_to_score_index(gold.view(3, 3), SCORES).shape == (3, 3)
    with pytest.raises(ValueError):
        gold_to_score_index(gold, torch.tensor([1.0, 3.0, 2.0]))


def test_regression_and_probability_rewards() -> None:
    y_hat = torch.tensor([3.5, 2.0, 5.0])
    gold = torch.tensor([4.0, 4.33, 5.0])
    torch.testing.assert_close(
        regression_reward(y_hat, gold), torch.tensor([-0.25, -(2.33**2), 0.0])
    )
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.0], [0.0, 0.0, 0.5, 0.25, 0.25]])
    out = probability_reward(probs, torch.tensor([4.33, 4.5]), SCORES)
    torch.testing.assert_close(out, torch.tensor([0.4, 0.25]))


def test_binary_reward() -> None:
    decoded = torch.tensor([4, 5, UNPARSABLE, 3, 5, 1])
    gold = torch.tensor([4.33, 4.33, 4.0, 3.0, 4.5, 0.4])
    # gold rounded: 4, 4, 4, 3, 5 (tie up), 1 (clamped to the scale)
    torch.testing.assert_close(
        binary_reward(decoded, gold, SCORES), torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    )
    # without scores: half-up rounding, no clamp (0.4 -> 0)
    torch.testing.assert_close(
        binary_reward(decoded, gold), torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    )
    # unparsable never rewarded, even if gold rounds to -1
    assert binary_reward(torch.tensor([UNPARSABLE]), torch.tensor([-1.0])).item() == 0.0
