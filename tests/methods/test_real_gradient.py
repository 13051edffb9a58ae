"""The REAL surrogate is an unbiased estimator of the true gradient (and the test can fail).

A tabular "judge": the CoT is 2 tokens from a vocabulary of 3 (9 possible CoTs), generated
autoregressively with logits ``theta_1 [3]`` then ``theta_2[c_1] [3]``; after CoT ``c`` the score
distribution is ``softmax(theta_score[c]) [5]`` over scores 1..5. Prompts differ only by their gold
label (two prompts: y = 2.0 and y = 4.33, a fractional annotator mean).

Exact objective, by enumerating the 9 CoTs:
    J(theta) = mean_y sum_c pi(c) * -(y_hat(c) - y)^2,   y_hat(c) = sum_k k softmax(theta_score[c])_k
and grad J by autograd. Estimate: ``-grad real_loss`` on a big batch of sampled groups.

Aggregation, carefully: the REINFORCE term of grad J is ``E[A * grad log pi(c)]`` with
``log pi(c) = sum_t log pi(c_t | c_<t)``: the PG loss must **sum** over the CoT tokens of each
sequence and **average** over sequences (``pg_agg="seq-mean-token-sum"``) so that it carries the
same 1/N weight as the refinement term ``mean_n (y_hat_n - y)^2``. The authors' ``token-mean``
divides by the number of CoT tokens instead; with a fixed CoT length L that is exactly the
unbiased PG term divided by L (checked below), so term (1) is shrunk by L relative to term (2)
and the sum is no longer an unbiased estimate of grad J (also checked: a negative control).

Tolerance: relative L2 error ``|g_hat - g| / |g| < 0.05`` on the full gradient vector and on each
of the two parameter blocks, with 100k groups of G = 4 (400k rollouts) and a fixed seed. The
observed error at this size is ~1%; the negative controls are off by ~45%.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from realjudge.methods import RealLossConfig, real_loss

V, L, K, G = 3, 2, 5, 4
N_GROUPS = 100_000
SCORES = torch.arange(1.0, 6.0)
GOLDS = (2.0, 4.33)
TOL = 0.05

UNBIASED = RealLossConfig(
    baseline="loo",
    normalize_std=False,
    adv_clip=None,
    lambda_p=0.0,
    beta=1.0,
    refine_terms="sq",
    pg_agg="seq-mean-token-sum",
)

Params = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _params(seed: int = 0) -> Params:
    g = torch.Generator().manual_seed(seed)
    theta_1 = torch.randn(V, generator=g)
    theta_2 = torch.randn(V, V, generator=g)
    theta_score = 1.5 * torch.randn(V, V, K, generator=g)
    return theta_1.requires_grad_(), theta_2.requires_grad_(), theta_score.requires_grad_()


def _flat(grads: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads])


def _exact_grad(params: Params) -> torch.Tensor:
    theta_1, theta_2, theta_score = params
    log_pi = torch.log_softmax(theta_1, 0)[:, None] + torch.log_softmax(theta_2, 1)  # [V, V]
    y_hat = torch.softmax(theta_score, -1) @ SCORES  # [V, V]
    j = torch.stack([(log_pi.exp() * -((y_hat - y) ** 2)).sum() for y in GOLDS]).mean()
    return _flat(torch.autograd.grad(j, params))


def _sample_categorical(probs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One draw per row of ``probs [N, V]`` by inverse CDF."""
    u = torch.rand(probs.shape[0], 1, generator=gen)
    return (u > probs.cumsum(-1)).sum(-1).clamp_max(probs.shape[-1] - 1)


def _rollouts(params: Params, n_groups: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Sampled CoTs -> (token_logprobs [N, L], score_probs [N, K], gold [N]), with grad."""
    theta_1, theta_2, theta_score = params
    gen = torch.Generator().manual_seed(seed)
    n = n_groups * G
    with torch.no_grad():
        c1 = _sample_categorical(torch.softmax(theta_1, 0).expand(n, V), gen)
        c2 = _sample_categorical(torch.softmax(theta_2, 1)[c1], gen)
    token_logprobs = torch.stack(
        [torch.log_softmax(theta_1, 0)[c1], torch.log_softmax(theta_2, 1)[c1, c2]], dim=1
    )
    score_probs = torch.softmax(theta_score, -1)[c1, c2]
    gold = torch.tensor(GOLDS)[torch.arange(n_groups) % len(GOLDS)].repeat_interleave(G)
    return token_logprobs, score_probs, gold


def _estimated_grad(params: Params, cfg: RealLossConfig, seed: int = 1234) -> torch.Tensor:
    token_logprobs, score_probs, gold = _rollouts(params, N_GROUPS, seed)
    mask = torch.ones_like(token_logprobs)
    loss, _ = real_loss(token_logprobs, mask, score_probs, SCORES, gold, G, cfg)
    return -_flat(torch.autograd.grad(loss, params))


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


N_COT_PARAMS = V + V * V  # theta_1, theta_2 come first in the flat vector


@pytest.fixture(scope="module")
def setup() -> tuple[Params, torch.Tensor]:
    params = _params()
    return params, _exact_grad(params)


def test_real_surrogate_is_unbiased(setup: tuple[Params, torch.Tensor]) -> None:
    params, exact = setup
    est = _estimated_grad(params, UNBIASED)
    # both blocks are non-trivial, so each term is really being checked
    assert exact[:N_COT_PARAMS].norm() > 0.05 and exact[N_COT_PARAMS:].norm() > 0.05
    assert _rel_err(est, exact) < TOL
    # block (1): CoT exploration -> theta_1, theta_2; block (2): refinement -> theta_score
    assert _rel_err(est[:N_COT_PARAMS], exact[:N_COT_PARAMS]) < TOL
    assert _rel_err(est[N_COT_PARAMS:], exact[N_COT_PARAMS:]) < TOL


def test_negative_control_without_refinement(setup: tuple[Params, torch.Tensor]) -> None:
    """beta = 0 drops E[grad R]: theta_score gets no gradient and the estimate is biased."""
    params, exact = setup
    cfg = replace(UNBIASED, beta=0.0)
    est = _estimated_grad(params, cfg)
    assert est[N_COT_PARAMS:].abs().max() == 0
    assert _rel_err(est, exact) > 4 * TOL


def test_negative_control_token_mean_pg(setup: tuple[Params, torch.Tensor]) -> None:
    """Authors' token-mean shrinks the PG term by L relative to the refinement term: biased."""
    params, exact = setup
    cfg = replace(UNBIASED, pg_agg="token-mean")
    est = _estimated_grad(params, cfg)
    assert _rel_err(est[:N_COT_PARAMS], exact[:N_COT_PARAMS]) > 4 * TOL
    assert _rel_err(est[N_COT_PARAMS:], exact[N_COT_PARAMS:]) < TOL


def test_token_mean_is_seq_sum_over_fixed_length() -> None:
    """With a fixed CoT length L and no padding, token-mean PG loss == seq-sum PG loss / L."""
    params = _params(seed=3)
    token_logprobs, score_probs, gold = _rollouts(params, 64, seed=5)
    mask = torch.ones_like(token_logprobs)
    pg_only = replace(UNBIASED, beta=0.0)
    seq, _ = real_loss(token_logprobs, mask, score_probs, SCORES, gold, G, pg_only)
    tok, _ = real_loss(
        token_logprobs,
        mask,
        score_probs,
        SCORES,
        gold,
        G,
        replace(pg_only, pg_agg="token-mean"),
    )
    torch.testing.assert_close(tok * L, seq)
