"""REAL's rewards come from the sampling policy: the generation pass's own logits after the
cue, a forward pass only for the rows whose generation never saw the cue, all in ``prepare``.

To get rollouts that write the cue from a random tiny model, ``generate`` is given a scripted
logits processor (after the recorder, which therefore still sees the model's raw logits):
chosen rows are made to write ``Feedback: fine <cue>`` and then sample freely.
"""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessorList

import realjudge.train.rl as rl
from realjudge.data.loaders import load_records
from realjudge.inference.rollout import (
    FORCED_CUE,
    OK,
    CueLogitsRecorder,
    Rollout,
    compact_logits,
    compact_score_distribution,
    logits_after_cue,
    raw_logits_reach_custom_processors,
    sample,
)
from realjudge.models import build_tiny_model
from realjudge.scoring import rail
from realjudge.scoring.vocab import ScoreVocab
from realjudge.train.examples import Encoder
from realjudge.train.objectives import Context, forward_examples
from realjudge.train.trainer import (
    _release,
    check_sizes,
    make_accelerator,
    make_objective,
    run_updates,
)

from ._helpers import (
    one_thread,  # noqa: F401  (autouse: one torch thread)
    quick_config,
)

# ---------------------------------------------------------------------------------------------
# pure parts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("normalize", [True, False])
def test_compact_distribution_equals_the_full_one(normalize):
    torch.manual_seed(0)
    logits = torch.randn(6, 50) * 3
    ids = torch.tensor([3, 7, 11, 20, 41])
    probs, leaked = compact_score_distribution(compact_logits(logits, ids), normalize)
    want_p, want_l = rail.score_distribution(logits, ids, normalize=normalize)
    torch.testing.assert_close(probs, want_p)
    torch.testing.assert_close(leaked, want_l)


def test_logits_after_cue_only_where_generation_saw_the_cue():
    steps = torch.arange(5 * 3, dtype=torch.float32).view(5, 3)
    ok = Rollout([1, 2, 3], 3, OK, None, "")
    assert torch.equal(logits_after_cue(steps, ok), steps[3])
    cue_last = Rollout([1, 2, 3, 4, 5], 5, OK, None, "")  # max_new_tokens ran out at the cue
    assert logits_after_cue(steps, cue_last) is None
    forced = Rollout([1, 2, 9, 9], 2, FORCED_CUE, None, "")
    assert logits_after_cue(steps, forced) is None


def test_recorder_stays_off_when_generate_would_process_logits_before_it():
    from transformers import GenerationConfig

    assert raw_logits_reach_custom_processors(GenerationConfig())
    assert not raw_logits_reach_custom_processors(GenerationConfig(repetition_penalty=1.3))
    assert not raw_logits_reach_custom_processors(GenerationConfig(bad_words_ids=[[5]]))


@pytest.fixture()
def real_setup(tokenizer, tmp_path):
    made = []

    def build(name: str = "real", **over):
        over.setdefault("mixed_precision", "no")
        over.setdefault("max_new_tokens", 16)
        over.setdefault("lora", False)
        cfg = quick_config("real", tmp_path, name=name, **over)
        while made:  # one accelerator at a time: the previous run is done
            _release(made.pop())
        acc = make_accelerator(cfg)
        made.append(acc)
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
        return cfg, ctx, acc, model, opt, sched, objective, list(enumerate(records))

    yield build
    for acc in made:
        _release(acc)


def _cue_tokens(ctx) -> list[int]:
    return ctx.encoder.encode("Feedback: fine " + ctx.vocab.cue_text)


class _Counter:
    """Wraps ``rl.forward_examples``: calls, rows, and whether the model was in train mode."""

    def __init__(self, monkeypatch) -> None:
        self.calls, self.rows, self.training = 0, 0, []
        inner = rl.forward_examples

        def counted(ctx, model, rows, **kw):
            self.calls += 1
            self.rows += len(rows)
            self.training.append(model.training)
            return inner(ctx, model, rows, **kw)

        monkeypatch.setattr(rl, "forward_examples", counted)


# ---------------------------------------------------------------------------------------------
# the generation pass's distribution
# ---------------------------------------------------------------------------------------------


def _fresh_distribution(ctx, model, groups, objective):
    """The score distribution of a fresh no-grad fp32 eval-mode forward of prompt + rollout."""
    with torch.no_grad(), rl.eval_mode(model):
        _, fwd = forward_examples(ctx, model, objective.flat_rows(ctx, groups))
    return rail.score_distribution(fwd.score_logits, ctx.score_ids, normalize=True)


def test_generation_pass_distribution_matches_a_fresh_fp32_forward(real_setup, scripted_generate):
    cfg, ctx, acc, model, *_, objective, indexed = real_setup()
    scripted_generate(_cue_tokens(ctx), lambda i: True)
    groups, stats = rl.sample_groups(
        ctx,
        model,
        [r for _, r in indexed],
        group_size=2,
        temperature=1.0,
        top_p=1.0,
        cue_logits=True,
    )
    flat = [r for g in groups for r in g.rollouts]
    assert all(r.status == OK and r.cue_logits is not None for r in flat)
    got_p, got_l = compact_score_distribution(torch.stack([r.cue_logits for r in flat]))
    want_p, want_l = _fresh_distribution(ctx, model, groups, objective)
    torch.testing.assert_close(got_p, want_p, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_l, want_l, rtol=1e-5, atol=1e-6)


def test_recorder_holds_the_raw_logits_generate_returns(tiny_model, tokenizer):
    """What the recorder keeps is exactly ``output_logits=True``'s raw logits (not the
    temperature / top-p processed ``output_scores``), at every step, for every row."""
    ids = torch.tensor([5, 9, 30, 31, 32])
    pad = tokenizer.pad_token_id
    rec = CueLogitsRecorder(ids)
    rec.active = True
    torch.manual_seed(3)
    out = tiny_model.eval().generate(
        input_ids=torch.tensor([[1, 2, 3, 4], [pad, pad, 7, 8]]),
        attention_mask=torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]]),
        do_sample=True,
        temperature=0.7,
        top_p=0.9,
        top_k=0,
        max_new_tokens=6,
        pad_token_id=pad,
        logits_processor=LogitsProcessorList([rec]),
        output_logits=True,
        output_scores=True,
        return_dict_in_generate=True,
    )
    steps = rec.result()
    assert steps is not None and steps.shape == (2, len(out.logits), 6)
    assert torch.equal(steps, compact_logits(torch.stack(out.logits, 1), ids))
    processed = compact_logits(torch.stack(out.scores, 1), ids)
    assert not torch.allclose(steps, processed)


def test_sample_records_every_row_and_step(tiny_model, tokenizer):
    """Through :func:`sample` (shared prefill): one recorded step per generated token, rows in
    the order of the continuations; each step's logits are those of a forward of prompt +
    the tokens generated before it."""
    ids = torch.tensor([5, 9, 30, 31, 32])
    prompts = [[1, 2, 3, 4], [7, 8]]
    rec = CueLogitsRecorder(ids)
    torch.manual_seed(3)
    outs = sample(tiny_model, tokenizer, prompts, num_samples=2, max_new_tokens=6, recorder=rec)
    steps = rec.result()
    assert steps is not None and steps.shape == (4, len(outs[0]), 6)
    for i, cont in enumerate(outs):
        full = torch.tensor([prompts[i // 2] + cont])
        with torch.no_grad():
            logits = tiny_model(input_ids=full).logits[0, len(prompts[i // 2]) - 1 : -1]
        torch.testing.assert_close(steps[i], compact_logits(logits, ids), rtol=1e-4, atol=1e-4)


def test_bf16_generation_copy_rewards_are_close_to_fp32(real_setup, scripted_generate):
    """A bf16 CPU run samples (and reads its rewards) from a bf16 copy of the fp32 weights:
    close to the fp32 distribution, not equal."""
    cfg, ctx, acc, model, *_, objective, indexed = real_setup(mixed_precision="bf16")
    scripted_generate(_cue_tokens(ctx), lambda i: True)
    groups, _ = rl.sample_groups(
        ctx,
        model,
        [r for _, r in indexed],
        group_size=2,
        temperature=1.0,
        top_p=1.0,
        cue_logits=True,
    )
    flat = [r for g in groups for r in g.rollouts]
    got_p, _ = compact_score_distribution(torch.stack([r.cue_logits for r in flat]))
    fp32 = build_tiny_model(ctx.tokenizer, seed=0)  # the same weights, no autocast wrapper
    want_p, _ = _fresh_distribution(ctx, fp32, groups, objective)
    diff = (got_p - want_p).abs().max().item()
    print(f"bf16 generation copy vs fp32: max |dp| = {diff:.2e}")
    assert 0 < diff < 5e-3, diff


# ---------------------------------------------------------------------------------------------
# prepare: forward passes, eval mode, independence of mini_batch_size
# ---------------------------------------------------------------------------------------------


def test_prepare_runs_no_forward_when_every_rollout_wrote_its_cue(
    real_setup, scripted_generate, monkeypatch
):
    cfg, ctx, acc, model, *_, objective, indexed = real_setup()
    scripted_generate(_cue_tokens(ctx), lambda i: True)
    count = _Counter(monkeypatch)
    groups, stats = objective.prepare(ctx, model, indexed, 0)
    assert count.calls == 0 and stats["rewards/forward_rows"] == 0
    assert all(g.advantages is not None and g.advantages.shape == (2,) for g in groups)
    assert model.training  # back in train mode for the updates


def test_prepare_forwards_only_the_forced_rows(real_setup, scripted_generate, monkeypatch):
    cfg, ctx, acc, model, *_, objective, indexed = real_setup(num_generations=4)
    scripted_generate(_cue_tokens(ctx), lambda i: i % 4 != 3)  # one row per group left free
    count = _Counter(monkeypatch)
    groups, stats = objective.prepare(ctx, model, indexed, 0)
    flat = [r for g in groups for r in g.rollouts]
    forced = sum(r.status != OK for r in flat)
    assert forced >= 1 and forced <= len(groups)  # the free rows (random model: no cue)
    assert count.rows == forced == stats["rewards/forward_rows"]
    micro_rows = check_sizes(cfg, acc.num_processes) * cfg.num_generations
    assert count.calls == -(-forced // micro_rows)
    assert count.training == [False] * count.calls  # eval mode, as sampled
    # the forced rows' rewards are those of a fresh forward of their rows
    want_p, _ = _fresh_distribution(ctx, model, groups, objective)
    got_p, _ = compact_score_distribution(torch.stack([r.cue_logits for r in flat]))
    torch.testing.assert_close(got_p, want_p, rtol=1e-5, atol=1e-6)


def test_clip_forward_is_the_only_forward_and_runs_in_eval_mode(
    real_setup, scripted_generate, monkeypatch
):
    """With ``clip_eps`` the sampling-policy forward (old log-probs) runs over every row in
    eval mode; the forced rows' rewards come from it, no further pass."""
    cfg, ctx, acc, model, *_, objective, indexed = real_setup(num_generations=4, clip_eps=0.2)
    scripted_generate(_cue_tokens(ctx), lambda i: i % 4 != 3)
    count = _Counter(monkeypatch)
    groups, stats = objective.prepare(ctx, model, indexed, 0)
    micro_rows = check_sizes(cfg, acc.num_processes) * cfg.num_generations
    assert count.rows == 4 * len(groups) and count.calls == -(-count.rows // micro_rows)
    assert count.training == [False] * count.calls
    assert stats["rewards/forward_rows"] == 0
    assert all(g.old is not None for g in groups)


def _advantages_after_updates(real_setup, scripted_generate, name: str, mini: int, **over):
    cfg, ctx, acc, model, opt, sched, objective, indexed = real_setup(
        name, mini_batch_size=mini, num_generations=4, learning_rate=5e-2, **over
    )
    scripted_generate(_cue_tokens(ctx), lambda i: i % 4 != 3)
    groups, stats = objective.prepare(ctx, model, indexed, 0)
    micro = check_sizes(cfg, acc.num_processes)
    run_updates(acc, ctx, model, opt, sched, objective, groups, micro)
    rollouts = [r.response_ids for g in groups for r in g.rollouts]
    adv = torch.cat([g.advantages for g in groups])
    return rollouts, adv, {k: v for k, v in stats.items() if k.startswith(("adv/", "reward"))}


@pytest.mark.parametrize("over", [{}, {"ppo_epochs": 2}])
def test_advantages_do_not_depend_on_mini_batch_size(real_setup, scripted_generate, over):
    ro_full, adv_full, m_full = _advantages_after_updates(
        real_setup, scripted_generate, "full", 4, **over
    )
    ro_mini, adv_mini, m_mini = _advantages_after_updates(
        real_setup, scripted_generate, "mini", 1, **over
    )
    assert ro_full == ro_mini  # same seed: the same rollouts
    assert torch.equal(adv_full, adv_mini)
    assert m_full == m_mini and "reward/mean" in m_full
