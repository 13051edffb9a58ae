"""One batch layout and one forward pass for every place that reads a judge's outputs.

Prompts are left-padded to a common length P and responses right-padded to R, so every
response starts at column P. A single forward pass then gives, from the same logits,
- the log-probability of each response token (policy gradient, SFT cross-entropy), and
- the next-token logits at the score position (RAIL's y_hat and p(y | x, c)),
which is why REAL costs what GRPO costs: no second teacher-forced pass. Training and inference
call the same code, so the score position cannot drift between them.

``score_index[i]`` counts the response tokens written before the score: the score is predicted
by the logits at column ``P - 1 + score_index[i]`` (0 for score-only prompts that end with the
cue).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class JudgeBatch:
    input_ids: torch.Tensor  # [N, P+R]
    attention_mask: torch.Tensor  # [N, P+R]
    position_ids: torch.Tensor  # [N, P+R]
    response_ids: torch.Tensor  # [N, R] (pad where absent)
    response_mask: torch.Tensor  # [N, R] 1.0 on tokens that enter token-level losses
    score_index: torch.Tensor  # [N] long
    prompt_len: int  # P

    @property
    def response_len(self) -> int:
        return self.response_ids.shape[1]

    def to(self, device: torch.device | str) -> JudgeBatch:
        return JudgeBatch(
            **{
                k: (v.to(device) if isinstance(v, torch.Tensor) else v)
                for k, v in self.__dict__.items()
            }
        )


def make_batch(
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Sequence[Sequence[int]],
    pad_id: int,
    score_index: Sequence[int] | None = None,
    loss_lengths: Sequence[int] | None = None,
) -> JudgeBatch:
    """Lay out ``N`` (prompt, response) pairs.

    Args:
        score_index: response tokens before the score, per row; default: the whole response
            (a rollout truncated right after its cue, or an empty response after a cue prompt).
        loss_lengths: how many leading response tokens enter token-level losses (e.g. the
            tokens the policy really sampled, leaving out an appended cue); default: all.
    """
    n = len(prompt_ids)
    if len(response_ids) != n:
        raise ValueError("prompt_ids and response_ids differ in length")
    P = max(len(p) for p in prompt_ids)
    R = max(1, max(len(r) for r in response_ids))
    input_ids = torch.full((n, P + R), pad_id, dtype=torch.long)
    attention = torch.zeros((n, P + R), dtype=torch.long)
    resp = torch.full((n, R), pad_id, dtype=torch.long)
    mask = torch.zeros((n, R), dtype=torch.float32)
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids, strict=True)):
        input_ids[i, P - len(p) : P] = torch.tensor(list(p), dtype=torch.long)
        attention[i, P - len(p) : P] = 1
        if len(r):
            input_ids[i, P : P + len(r)] = torch.tensor(list(r), dtype=torch.long)
            attention[i, P : P + len(r)] = 1
            resp[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
        m = len(r) if loss_lengths is None else loss_lengths[i]
        mask[i, :m] = 1.0
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    if score_index is None:
        score_index = [len(r) for r in response_ids]
    si = torch.tensor(list(score_index), dtype=torch.long)
    if (si > R).any() or (si < 0).any():
        raise ValueError("score_index outside the response")
    return JudgeBatch(input_ids, attention, position_ids, resp, mask, si, P)


@dataclass
class JudgeForward:
    token_logprobs: torch.Tensor  # [N, R] log pi(response token); mask with response_mask
    score_logits: torch.Tensor  # [N, V] next-token logits at the score position
    token_entropy: torch.Tensor | None = None  # [N, R] when asked for


class _ReadLogits(torch.autograd.Function):
    """``logits [N, R+1, V] -> (token log-probs [N, R], score-position logits [N, V])``.

    Written out by hand so that the backward pass writes the gradient of *both* outputs into
    one ``[N, R+1, V]`` buffer. Built from standard ops (``log_softmax`` + ``gather`` for the
    tokens, indexing for the score row), every read materialises its own full-size gradient
    (gather, slice and index backward each allocate one) before they are summed: reading the
    score row with grad (REAL, RAFT, TRACT) then cost an extra logits-sized buffer, a large
    share of a step's footprint when the vocabulary is large. Saves ``logits`` and the
    per-token log-normaliser; no ``[N, R, V]`` log-softmax is kept.
    """

    @staticmethod
    def forward(ctx, logits, response_ids, score_index):  # type: ignore[override]
        R = response_ids.shape[1]
        lse = torch.logsumexp(logits[:, :R], dim=-1)  # [N, R]
        picked = logits[:, :R].gather(-1, response_ids.unsqueeze(-1)).squeeze(-1)
        rows = torch.arange(logits.shape[0], device=logits.device)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(logits, lse, response_ids, score_index)
        return picked - lse, logits[rows, score_index]

    @staticmethod
    def backward(ctx, g_tokens, g_score):  # type: ignore[override]
        logits, lse, response_ids, score_index = ctx.saved_tensors
        grad = torch.zeros_like(logits)
        if g_tokens is not None:
            # d log p(y_j) / d logits_j = onehot(y_j) - softmax(logits_j), in place
            part = grad[:, : response_ids.shape[1]]
            part.copy_(logits[:, : part.shape[1]]).sub_(lse.unsqueeze(-1)).exp_()
            part.mul_(-g_tokens.unsqueeze(-1))
            part.scatter_add_(-1, response_ids.unsqueeze(-1), g_tokens.unsqueeze(-1))
        if g_score is not None:
            rows = torch.arange(logits.shape[0], device=logits.device)
            grad.index_put_((rows, score_index), g_score, accumulate=True)
        return grad, None, None


def shares_prompts(batch: JudgeBatch, group_size: int) -> bool:
    """Whether rows ``i * group_size ... i * group_size + group_size - 1`` hold one prompt
    each (the rollouts of one prompt, as RL lays them out), so that
    :func:`judge_forward` can run each prompt once."""
    n, P = batch.input_ids.shape[0], batch.prompt_len
    if group_size < 2 or n % group_size or P < 2:  # the shared cache holds P - 1 columns
        return False
    for part in (batch.input_ids[:, :P], batch.attention_mask[:, :P]):
        grouped = part.view(n // group_size, group_size, P)
        if not bool((grouped == grouped[:, :1]).all()):
            return False
    return True


#: The shortest common prompt prefix that :func:`judge_forward` runs once for a whole batch
#: (``share_prefix``): below it the extra forward call costs more than the tokens it saves.
MIN_SHARED_PREFIX = 16


def common_prefix_len(batch: JudgeBatch) -> int:
    """How many leading prompt tokens every row of ``batch`` shares (its prompts are
    left-padded, so each row's prompt starts at its own column), leaving each row at least
    one prompt token of its own: 0 when the rows share none or the batch has one row."""
    n, P = batch.input_ids.shape[0], batch.prompt_len
    lens = batch.attention_mask[:, :P].sum(-1)
    shortest = int(lens.min()) if n else 0
    if n < 2 or shortest < 2:
        return 0
    columns = (P - lens).unsqueeze(1) + torch.arange(shortest - 1, device=lens.device)
    aligned = batch.input_ids.gather(1, columns)  # [N, shortest - 1], each from its start
    same = (aligned == aligned[:1]).all(0)
    return int(same.long().cumprod(0).sum())


def uses_sliding_window(model: torch.nn.Module) -> bool:
    """Whether ``model`` attends through a sliding window in any layer (Mistral, Gemma 2/3, a
    Qwen config with ``use_sliding_window``). Such a window counts the distance between two
    tokens in columns, and the shared-prefix layout of :func:`judge_forward` puts a row's
    own tokens further (in columns) from the cached prefix than they are in positions, so
    it would change what they see: those models take the full pass."""
    inner = getattr(model, "module", model)  # DDP
    config = getattr(inner, "config", None)
    if config is None:
        return False
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    layer_types = getattr(text, "layer_types", None)
    if layer_types:
        return any("sliding" in str(t) for t in layer_types)
    window = getattr(text, "sliding_window", None)
    return bool(window) and getattr(text, "use_sliding_window", True) is not False


def _prefix_layout(batch: JudgeBatch, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row 0's first ``c + 1`` prompt tokens ``[1, c+1]`` (the shared prefix and one token
    more, as :func:`~realjudge.inference.rollout.shared_prefill` takes a prompt: it caches
    all but the last) and the attention mask ``[N, P+R]`` of a pass that reads the first
    ``c`` columns from that cache and the columns from ``c`` on from ``batch``: there a row's
    own columns before the rest of its prompt (its padding and its copy of the prefix) are
    masked out."""
    P = batch.prompt_len
    lens = batch.attention_mask[:, :P].sum(-1)
    start = int(P - lens[0])
    prefix = batch.input_ids[:1, start : start + c + 1]  # c <= shortest - 1: always there
    rest_starts = (P - lens + c).unsqueeze(1)  # [N, 1]: column of each row's first own token
    columns = torch.arange(batch.input_ids.shape[1], device=lens.device).unsqueeze(0)
    mask = batch.attention_mask * (columns >= rest_starts)
    mask[:, :c] = 1  # the cached prefix
    return prefix, mask


def judge_forward(
    model: torch.nn.Module,
    batch: JudgeBatch,
    entropy: bool = False,
    group_size: int = 1,
    share_prefix: bool = False,
) -> JudgeForward:
    """One forward pass; logits are computed only over the response columns (+1).

    With ``group_size`` > 1 and rows laid out in groups that share their prompt
    (:func:`shares_prompts`), each prompt runs once for its group: the KV cache of its columns
    but the last is computed for one row and repeated ``group_size`` times
    (:func:`~realjudge.inference.rollout.shared_prefill`, as the rollouts share their prefill),
    and every row runs from its prompt's last column on that cache. Otherwise, with
    ``share_prefix`` and a prompt prefix common to every row of at least
    :data:`MIN_SHARED_PREFIX` tokens (:func:`common_prefix_len`: a prompt template's system
    message and task description) and no sliding-window attention
    (:func:`uses_sliding_window`), the prefix runs once for the batch, its KV cache repeated
    for every row, and each row runs from the rest of its prompt on. Either way the same
    numbers as the full pass up to float rounding; autograd sums the rows' gradients through
    the repeat."""
    from realjudge.inference.rollout import cache_kwarg, shared_prefill

    P, R = batch.prompt_len, batch.response_len
    start, cached, mask = 0, {}, batch.attention_mask
    if group_size > 1 and shares_prompts(batch, group_size):
        first = slice(None, None, group_size)
        ids, first_mask = batch.input_ids[first, :P], batch.attention_mask[first, :P]
        cached = {cache_kwarg(model): shared_prefill(model, ids, first_mask, group_size)}
        start = P - 1
    elif (
        share_prefix
        and (c := common_prefix_len(batch)) >= MIN_SHARED_PREFIX
        and not uses_sliding_window(model)
    ):
        prefix, mask = _prefix_layout(batch, c)
        copies = batch.input_ids.shape[0]
        cache = shared_prefill(model, prefix, torch.ones_like(prefix), copies)
        cached = {cache_kwarg(model): cache}
        start = c
    out = model(
        input_ids=batch.input_ids[:, start:],
        attention_mask=mask,
        position_ids=batch.position_ids[:, start:],
        logits_to_keep=R + 1,
        use_cache=bool(cached),
        **cached,
    )
    logits = out.logits.float()  # [N, R+1, V]; column j predicts response token j
    if not entropy:
        token_logprobs, score_logits = _ReadLogits.apply(
            logits, batch.response_ids, batch.score_index
        )
        return JudgeForward(token_logprobs=token_logprobs, score_logits=score_logits)
    logp = torch.log_softmax(logits[:, :R], dim=-1)
    token_logprobs = logp.gather(-1, batch.response_ids.unsqueeze(-1)).squeeze(-1)
    rows = torch.arange(logits.shape[0], device=logits.device)
    score_logits = logits[rows, batch.score_index]
    ent = -(logp.exp() * logp).sum(-1)
    return JudgeForward(token_logprobs=token_logprobs, score_logits=score_logits, token_entropy=ent)
