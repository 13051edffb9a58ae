"""Each method's objective lowers its own loss on a small fixed batch of the tiny model.

The batch is prepared once (for RL: rollouts sampled once), then the trainer's own update
function (:func:`realjudge.train.trainer.run_updates`) is applied a few times.
"""

from __future__ import annotations

import pytest
import torch

from realjudge.data.loaders import load_records
from realjudge.inference.rollout import OK, Rollout
from realjudge.models import build_tiny_model
from realjudge.scoring.vocab import ScoreVocab
from realjudge.train.examples import Encoder
from realjudge.train.objectives import Context
from realjudge.train.rl import GRPOObjective, PromptGroup, REALObjective
from realjudge.train.trainer import check_sizes, make_accelerator, make_objective, run_updates

from ._helpers import (
    one_thread,  # noqa: F401  (autouse: one torch thread)
    quick_config,
)


@pytest.fixture()
def setup(tokenizer, tmp_path):
    """Build (cfg, ctx, model, optimizer, objective, items) for a method, fixed batch."""
    made = []

    def build(method: str, **over):
        cfg = quick_config(method, tmp_path, **over)
        acc = make_accelerator(cfg)
        made.append(acc)
        torch.manual_seed(0)
        model = build_tiny_model(tokenizer, seed=0)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
        model, opt, sched = acc.prepare(model, opt, sched)
        records = load_records(cfg.data).records
        vocab = ScoreVocab.from_tokenizer(tokenizer, cfg.fmt, (1, 5))
        enc = Encoder(tokenizer, vocab, cfg.fmt, cfg.max_prompt_tokens, cfg.max_new_tokens)
        ctx = Context(cfg, acc, tokenizer, enc, vocab, (1, 5))
        objective = make_objective(cfg)
        if hasattr(objective, "setup"):
            objective.setup(ctx, model, records, list(range(len(records))))
        items, _ = objective.prepare(ctx, model, list(enumerate(records)), 0)
        micro = check_sizes(cfg, acc.num_processes)

        def update():
            return run_updates(acc, ctx, model, opt, sched, objective, items, micro)

        return cfg, ctx, model, objective, items, update

    yield build
    from realjudge.train.trainer import _release

    for acc in made:
        _release(acc)


def _losses(update, key: str, n: int) -> list[float]:
    return [update()[key] for _ in range(n)]


def test_sft_lowers_cross_entropy(setup):
    *_, update = setup("sft")
    ce = _losses(update, "ce", 4)
    assert ce[-1] < ce[0] - 0.5, ce


def test_raft_lowers_squared_error(setup):
    # golds far above the untrained prediction (~2.9): the error must fall fast
    *_, update = setup("raft", golds=(5, 4))
    reg = _losses(update, "regression", 4)
    assert reg[-1] < reg[0] * 0.5, reg


def test_raft_lambda_p_adds_the_gold_nll_of_the_same_pass(setup):
    """raft_lambda_p = 0 is the squared error alone; > 0 adds lambda_p times the mean
    -log p(y|x) of the renormalised score distribution of the same forward pass."""
    from realjudge.train.objectives import forward_examples, gold_tensor

    cfg, ctx, model, objective, items, _ = setup("raft", raft_lambda_p=0.5)
    with torch.no_grad():
        loss, parts = objective.loss(ctx, model, items)
        _, fwd = forward_examples(ctx, model, items)
    logp = torch.log_softmax(fwd.score_logits[:, ctx.score_ids], -1)
    gold = gold_tensor(items, ctx.device)
    want_nll = -logp.gather(-1, (gold - 1).long().unsqueeze(-1)).mean()
    assert parts["nll"] == pytest.approx(want_nll.item(), rel=1e-5)
    assert loss.item() == pytest.approx(parts["regression"] + 0.5 * parts["nll"], rel=1e-6)
    cfg.raft_lambda_p = 0.0
    with torch.no_grad():
        plain, parts0 = objective.loss(ctx, model, items)
    assert "nll" not in parts0 and plain.item() == pytest.approx(parts["regression"], rel=1e-6)


def test_tract_lowers_ce_plus_regression(setup):
    *_, update = setup("tract", tract_lambda=1.0)
    loss = _losses(update, "loss", 4)
    assert loss[-1] < loss[0] - 0.5, loss


def test_tract_stage2_trains_on_regenerated_cots(setup, tmp_path):
    cfg, ctx, model, objective, items, update = setup("tract", tract_stage=2, max_new_tokens=6)
    cache = tmp_path / "tract" / objective.CACHE
    assert cache.is_file()
    # the random tiny model never writes the cue: every regenerated CoT ends with the forced cue
    # (its tokens as they follow the text before it: no space of its own after a newline)
    tok, cue = ctx.tokenizer, ctx.vocab.cue_text
    assert all(tok.decode(row.response_ids).endswith(cue) for row in items)
    assert all(row.score_index == len(row.response_ids) for row in items)
    loss = _losses(update, "loss", 3)
    assert loss[-1] < loss[0], loss


def test_real_refinement_lowers_squared_error(setup):
    # beta=1 with the squared-error refinement: the loss's own regression part must fall on a
    # fixed set of rollouts (the PG part has no fixed target).
    *_, update = setup("real", golds=(5, 4), beta=1.0, refine_terms="sq", num_generations=2)
    refine = _losses(update, "refine_loss", 4)
    assert refine[-1] < refine[0] * 0.5, refine


def test_real_std_eps_reaches_the_loss(setup):
    _, _, _, objective, *_ = setup("real", num_generations=2, std_eps=3e-3)
    assert objective.loss_cfg.std_eps == 3e-3


def test_real_rollouts_are_cut_at_the_cue_and_masked(setup):
    cfg, ctx, model, objective, items, update = setup("real")
    assert isinstance(objective, REALObjective)
    assert len(items) == 4 and all(len(g.rollouts) == cfg.num_generations for g in items)
    rows = objective.flat_rows(ctx, items)
    for row, ro in zip(rows, [r for g in items for r in g.rollouts], strict=True):
        assert row.score_index == len(row.response_ids)  # score read right after the cue
        assert row.loss_len == ro.n_sampled  # appended cue tokens get no credit
        if ro.status != OK:
            assert ctx.tokenizer.decode(row.response_ids).endswith(ctx.vocab.cue_text)
    metrics = update()
    for key in ("pg_loss", "refine_loss", "y_hat/mean", "leaked_mass"):
        assert key in metrics
    # the rewards and advantages are fixed in prepare, once per step: its metrics carry them
    _, prep = objective.prepare(ctx, model, list(enumerate(load_records(cfg.data).records)), 1)
    for key in ("reward/mean", "adv/std", "rewards/forward_rows"):
        assert key in prep


def test_real_ppo_epochs_make_several_updates(setup):
    cfg, ctx, model, objective, items, update = setup("real", ppo_epochs=3, mini_batch_size=2)
    before = [p.detach().clone() for p in model.parameters()]
    metrics = update()
    assert objective.passes == 3 and "loss/last_pass" in metrics
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_real_advantages_are_fixed_over_ppo_epochs(setup, monkeypatch):
    """Every pass and mini-batch uses the advantages fixed in ``prepare`` from the sampling
    policy -- for the first mini-batch those of its first forward (nothing moved yet), for the
    second NOT those of its first forward (one update came in between) -- while the
    refinement sees the current, moved, distribution."""
    import realjudge.train.rl as rl
    from realjudge.methods import real_advantages

    calls = []
    real_loss = rl.real_loss

    def spy(*args, **kwargs):
        probs, scores, gold = (a.detach().clone() for a in args[2:5])
        calls.append((kwargs["advantages"].detach().clone(), probs, scores, gold))
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(rl, "real_loss", spy)
    cfg, ctx, model, objective, items, update = setup(
        "real",
        ppo_epochs=3,
        mini_batch_size=2,
        num_generations=4,
        normalize_std=False,
        adv_clip=None,
        beta=1.0,
        refine_terms="sq",
        learning_rate=1e-2,
        mixed_precision="no",
    )
    stored = torch.cat([g.advantages for g in items])
    update()
    n = len(calls) // 3  # micro-batches per pass
    assert n == 2 and len(calls) == 3 * n
    loss_cfg = objective.loss_cfg
    for j in range(n):
        adv, probs, scores, gold = calls[j]
        assert torch.equal(adv, stored[j * 8 : (j + 1) * 8])
        first_forward = real_advantages(probs, scores, gold, 4, loss_cfg)[0]
        if j == 0:
            torch.testing.assert_close(adv, first_forward)
        else:
            assert not torch.allclose(adv, first_forward, atol=1e-4)  # stale, the old way
        for p in (1, 2):
            later_adv, later_probs, *_ = calls[p * n + j]
            assert torch.equal(later_adv, adv)
            assert not torch.allclose(later_probs, probs)  # the model moved in between


def test_real_advantages_come_from_the_sampling_forward_with_clip_eps(setup):
    cfg, ctx, model, objective, items, update = setup("real", ppo_epochs=2, clip_eps=0.2)
    assert all(g.advantages is not None for g in items)  # set in prepare, before any update
    before = [g.advantages.clone() for g in items]
    update()
    assert all(torch.equal(g.advantages, b) for g, b in zip(items, before, strict=True))


def test_grpo_lowers_its_pg_loss_on_fixed_rollouts(setup, tokenizer):
    """Hand-made rollouts: a cue and a score; the correct one rewarded 1, the wrong one 0."""
    cfg, ctx, model, objective, items, update = setup("grpo", learning_rate=1e-2)
    assert isinstance(objective, GRPOObjective)
    cue = ctx.encoder.encode("Feedback: fine " + ctx.vocab.cue_text)
    groups = []
    for g in items:
        gold = round(g.gold)
        wrong = 1 if gold != 1 else 5
        rolls = [Rollout(list(cue), len(cue), OK, s, "") for s in (gold, wrong)]
        groups.append(PromptGroup(g.prompt_ids, g.gold, rolls))
    items[:] = groups
    rows = objective.flat_rows(ctx, groups)
    assert all(r.loss_len == len(cue) + 1 == len(r.response_ids) for r in rows)  # + score token
    first = update()
    assert first["reward/mean"] == pytest.approx(0.5)
    losses = [first["pg_loss"]] + _losses(update, "pg_loss", 3)
    assert losses[-1] < losses[0], losses


def test_grpo_sampled_rollouts_run(setup):
    cfg, ctx, model, objective, items, update = setup("grpo", advantage="rloo")
    metrics = update()
    # a random model writes no score: reward 0 everywhere, zero advantages, zero loss
    assert metrics["reward/mean"] == 0.0 and metrics["parse_fail_frac"] == 1.0


def test_grpo_rewards_a_readable_score_whatever_its_tokenisation(setup, tokenizer):
    """A rollout that wrote its score after a re-tokenized cue ("[RESULT]4": no token boundary
    after "[RESULT] ") or after a cue followed by other text ("[RESULT]  4") is rewarded for the
    score evaluation's parser reads, like one with the canonical score token; a rollout
    without a verdict gets 0."""
    from realjudge.inference.judge import parse_score
    from realjudge.inference.rollout import FORCED_CUE, RETOKENIZED_CUE
    from realjudge.train.rl import read_rollout

    cfg, ctx, model, objective, items, update = setup("grpo", num_generations=4)
    stops = {tokenizer.eos_token_id}
    groups, kinds = [], []
    for g in items:
        gold = round(g.gold)
        texts = [
            f"Feedback: fine. [RESULT]{gold}",  # re-tokenized cue
            f"Feedback: fine. [RESULT]  {gold}",  # canonical cue, then a space token
            f"Feedback: fine. [RESULT] {gold}",  # canonical cue and score token
            "Feedback: no verdict at all",  # forced cue
        ]
        rolls = []
        for text in texts:
            r = read_rollout(ctx, ctx.encoder.encode(text) + [tokenizer.eos_token_id], stops)
            assert r.written_score == parse_score(text, ctx.scale)  # evaluation's reading
            rolls.append(r)
        kinds.append([(r.status, r.sampled_score, r.written_score) for r in rolls])
        groups.append(PromptGroup(g.prompt_ids, g.gold, rolls))
    for gold, kind in zip((round(g.gold) for g in items), kinds, strict=True):
        assert kind == [
            (RETOKENIZED_CUE, None, gold),
            (OK, None, gold),
            (OK, gold, gold),
            (FORCED_CUE, None, None),
        ]
    items[:] = groups
    rows = objective.flat_rows(ctx, groups)
    # only the canonical score token is part of the response; the rewritten cue is not credited
    retok = rows[0]
    assert retok.loss_len == groups[0].rollouts[0].n_sampled < len(retok.response_ids)
    assert rows[2].loss_len == len(rows[2].response_ids) == groups[0].rollouts[2].n_sampled + 1
    metrics = update()
    assert metrics["reward/mean"] == pytest.approx(0.75)
    assert metrics["parse_fail_frac"] == pytest.approx(0.25)


@pytest.mark.parametrize("method", ["sft", "raft", "tract"])
def test_supervised_losses_run_the_prompt_template_once_per_mini_batch(setup, method):
    """share_prefix_forward (default on): the rows' common prompt prefix -- the template's
    system message and task description -- runs once, then every row from the rest of its
    prompt on; the loss is the full pass's up to rounding. Off under gradient checkpointing."""
    from realjudge.inference.batch import MIN_SHARED_PREFIX

    cfg, ctx, model, objective, items, _ = setup(method, mixed_precision="no")
    assert cfg.share_prefix_forward and ctx.share_prefix
    embed = model.get_input_embeddings()
    widths: list[tuple[int, int]] = []
    handle = embed.register_forward_hook(lambda _m, a, _o: widths.append(tuple(a[0].shape)))
    try:
        with torch.no_grad():
            shared, _ = objective.loss(ctx, model, items)
    finally:
        handle.remove()
    assert widths[0][0] == 1 and widths[0][1] >= MIN_SHARED_PREFIX  # the prefix, once
    assert widths[1][0] == len(items)
    cfg.share_prefix_forward = False
    assert not ctx.share_prefix
    with torch.no_grad():
        full, _ = objective.loss(ctx, model, items)
    assert shared.item() == pytest.approx(full.item(), rel=1e-5, abs=1e-6)
    cfg.share_prefix_forward, cfg.gradient_checkpointing = True, True
    assert not ctx.share_prefix
