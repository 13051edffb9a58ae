import math

import pytest
import torch

from realjudge.scoring.rail import argmax_score, expected_score, score_distribution

SCORES = torch.tensor([1, 2, 3, 4, 5])


def test_expected_score_hand_computed():
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.2, 0.2], [0.0, 0.0, 0.0, 0.0, 1.0]])
    # 0.1 + 0.4 + 0.9 + 0.8 + 1.0 = 3.2
    assert expected_score(probs, SCORES).tolist() == pytest.approx([3.2, 5.0])


def test_renormalised_distribution_and_leaked_mass():
    # vocabulary of 8; score tokens are ids 3..7; ids 0..2 take part of the mass
    logits = torch.log(torch.tensor([0.1, 0.05, 0.05, 0.2, 0.2, 0.1, 0.2, 0.1]))
    ids = torch.tensor([3, 4, 5, 6, 7])
    probs, leaked = score_distribution(logits, ids, normalize=True)
    assert leaked.item() == pytest.approx(0.2)
    assert probs.tolist() == pytest.approx([0.25, 0.25, 0.125, 0.25, 0.125])
    # 0.25*1 + 0.25*2 + 0.125*3 + 0.25*4 + 0.125*5 = 2.75
    assert expected_score(probs, SCORES).item() == pytest.approx(2.75)


def test_raw_distribution_keeps_the_leak():
    logits = torch.log(torch.tensor([0.1, 0.05, 0.05, 0.2, 0.2, 0.1, 0.2, 0.1]))
    ids = torch.tensor([3, 4, 5, 6, 7])
    probs, leaked = score_distribution(logits, ids, normalize=False)
    assert probs.sum().item() == pytest.approx(1 - leaked.item())
    # raw expected score = 0.2 + 0.4 + 0.3 + 0.8 + 0.5 = 2.2 (pulled towards 0 by the leak)
    assert expected_score(probs, SCORES).item() == pytest.approx(2.2)


def test_score_distribution_is_differentiable_and_batched():
    logits = torch.randn(3, 4, 10, requires_grad=True)
    probs, leaked = score_distribution(logits, torch.tensor([1, 2, 3, 4, 5]))
    assert probs.shape == (3, 4, 5) and leaked.shape == (3, 4)
    expected_score(probs, SCORES).sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    # only the score logits get a gradient from a renormalised expectation
    assert logits.grad[..., [0, 6, 7, 8, 9]].abs().max().item() == 0.0


def test_leaked_mass_is_accurate_when_tiny():
    logits = torch.full((6,), -40.0)
    logits[1:] = 0.0
    _, leaked = score_distribution(logits, torch.tensor([1, 2, 3, 4, 5]))
    assert leaked.item() == pytest.approx(math.exp(-40) / (math.exp(-40) + 5), rel=1e-3)


def test_argmax_score():
    probs = torch.tensor([[0.1, 0.5, 0.1, 0.2, 0.1]])
    assert argmax_score(probs, SCORES).tolist() == [2]
