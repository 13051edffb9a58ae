"""vLLM backend for :class:`~realjudge.inference.judge.Judge`: same items, same rows.

It depends only on the lower modules :mod:`~realjudge.inference.settings`,
:mod:`~realjudge.inference.items` and :mod:`~realjudge.inference.parse`; the judge module picks
it (and imports it lazily), never the other way round.

Status: only the glue is tested (on CPU, against a fake ``vllm`` module that answers from a
tiny transformers model, see ``tests/inference/test_vllm_backend.py``). The real vLLM path
has NOT been run in this repository's development environment (no GPU there). Check it on a
GPU machine before relying on it: ``realjudge eval --backend vllm ...`` should agree with
``--backend transformers`` up to bf16 noise.

How a score is read with vLLM:

1. Chains of thought: one ``LLM.generate`` call with ``SamplingParams(n=K, temperature,
   top_p, max_tokens, stop=[cue + score for each score], include_stop_str_in_output=True)``
   on the token ids of the prompts (the prompt is tokenized by our tokenizer, exactly as in the
   transformers backend). Each completion is cut after its cue by
   :func:`~realjudge.inference.rollout.finish_rollout` (cue appended when missing), as in the
   transformers backend.
2. Score distribution: a second ``generate`` call on ``prompt + feedback-up-to-the-cue`` (or
   ``prompt + cue`` without a CoT) with ``max_tokens=1``, greedy, and log-probabilities at that
   one position: the top ``top_logprobs`` tokens and, when the installed vLLM knows
   ``SamplingParams.logprob_token_ids``, exactly the score tokens. vLLM V1 returns raw
   log-probabilities (``logprobs_mode="raw_logprobs"``, computed before temperature,
   penalties and allowed-token masks); this request is greedy with no penalties, so raw and
   processed coincide on older versions too. The prefix cache makes this second request cheap.
   A score token missing from the returned top-N (old vLLM without ``logprob_token_ids``) counts
   as probability 0, i.e. as leaked mass; if none of them is there the item fails with a
   message saying to raise ``max_logprobs``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from realjudge.inference.items import JudgeItem, SampleOutcome
from realjudge.inference.parse import parse_score
from realjudge.inference.rollout import finish_rollout, stop_token_ids
from realjudge.inference.settings import JudgeConfig
from realjudge.scoring.vocab import ScoreVocab

DEFAULT_TOP_LOGPROBS = 20  # vLLM's default max_logprobs
_VLLM_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "auto": "auto"}


def _vllm() -> Any:
    import vllm

    return vllm


def load_llm(
    path: str,
    *,
    dtype: str | None = None,
    seed: int = 0,
    max_logprobs: int = DEFAULT_TOP_LOGPROBS,
    **kwargs: Any,
) -> Any:
    """A ``vllm.LLM`` for a checkpoint directory or hub id (GPU only; not run here)."""
    vllm = _vllm()
    return vllm.LLM(
        model=path,
        tokenizer=path,
        dtype=_VLLM_DTYPES.get(dtype or "auto", dtype),
        seed=seed,
        max_logprobs=max_logprobs,
        **kwargs,
    )


def distribution_from_logprobs(
    logprobs: Mapping[int, Any], token_ids: Sequence[int], normalize: bool = True
) -> tuple[list[float], float]:
    """Score probabilities and leaked mass from one position's ``{token_id: Logprob}`` map.

    Values may be vLLM ``Logprob`` objects (``.logprob``) or plain floats. Same math as
    :func:`realjudge.scoring.rail.score_distribution`: renormalised over the score tokens, or
    raw (summing to ``1 - leaked``).
    """
    values = []
    for t in token_ids:
        entry = logprobs.get(t)
        values.append(float("-inf") if entry is None else float(getattr(entry, "logprob", entry)))
    if all(v == float("-inf") for v in values):
        raise ValueError(
            f"none of the score tokens {list(token_ids)} is among the {len(logprobs)} "
            "log-probabilities vLLM returned at the score position; start vLLM with a larger "
            "max_logprobs or upgrade it (SamplingParams.logprob_token_ids)"
        )
    lp = torch.tensor(values, dtype=torch.float64)
    leaked = float(-torch.expm1(torch.logsumexp(lp, dim=0)))
    probs = torch.softmax(lp, dim=0) if normalize else lp.exp()
    return probs.tolist(), leaked


class VLLMBackend:
    """Runs :class:`JudgeItem` batches through a ``vllm.LLM`` (see the module doc)."""

    name = "vllm"

    def __init__(
        self,
        llm: Any,
        tokenizer: Any,
        config: JudgeConfig,
        *,
        top_logprobs: int = DEFAULT_TOP_LOGPROBS,
        generation_config: Any = None,
    ) -> None:
        self.llm = llm
        self.tokenizer = tokenizer
        self.config = config
        self.top_logprobs = top_logprobs
        self.sampling_params_cls = _vllm().SamplingParams
        self.stop_ids = stop_token_ids(tokenizer, generation_config=generation_config)
        self.exact_token_logprobs: bool | None = None  # logprob_token_ids supported?

    # -- requests ------------------------------------------------------------------------

    def _score_params(self, vocab: ScoreVocab) -> Any:
        base: dict[str, Any] = dict(max_tokens=1, temperature=0.0, logprobs=self.top_logprobs)
        if self.exact_token_logprobs is not False:
            try:
                params = self.sampling_params_cls(**base, logprob_token_ids=list(vocab.token_ids))
            except TypeError:  # an older vLLM without logprob_token_ids
                self.exact_token_logprobs = False
            else:
                self.exact_token_logprobs = True
                return params
        return self.sampling_params_cls(**base)

    def _generation_params(self, vocab: ScoreVocab) -> Any:
        cfg = self.config
        greedy = cfg.greedy
        return self.sampling_params_cls(
            n=cfg.effective_samples,
            temperature=0.0 if greedy else cfg.effective_temperature,
            top_p=1.0 if greedy else cfg.top_p,
            max_tokens=cfg.max_new_tokens,
            stop=list(vocab.stop_strings),
            include_stop_str_in_output=True,
            stop_token_ids=sorted(self.stop_ids),
        )

    def score_distributions(
        self, sequences: Sequence[Sequence[int]], vocabs: Sequence[ScoreVocab]
    ) -> list[tuple[list[float], float]]:
        """The score distribution right after each token sequence (one position each)."""
        prompts = [{"prompt_token_ids": list(ids)} for ids in sequences]
        params = [self._score_params(v) for v in vocabs]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        if len(outputs) != len(prompts):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(prompts)} prompts")
        result = []
        for out, vocab in zip(outputs, vocabs, strict=True):
            completion = out.outputs[0]
            if not completion.logprobs:
                raise RuntimeError("vLLM returned no log-probabilities for the score request")
            result.append(
                distribution_from_logprobs(
                    completion.logprobs[0], vocab.token_ids, self.config.normalize
                )
            )
        return result

    # -- the backend protocol ------------------------------------------------------------

    def run(self, items: Sequence[JudgeItem]) -> list[list[SampleOutcome]]:
        if not self.config.cot:
            dists = self.score_distributions(
                [it.prompt_ids for it in items], [it.vocab for it in items]
            )
            return [[SampleOutcome(probs=p, leaked=leak)] for p, leak in dists]

        prompts = [{"prompt_token_ids": list(it.prompt_ids)} for it in items]
        params = [self._generation_params(it.vocab) for it in items]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        if len(outputs) != len(items):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(items)} prompts")
        owners, sequences, vocabs, partial = [], [], [], []
        for i, (item, out) in enumerate(zip(items, outputs, strict=True)):
            for completion in out.outputs:
                rollout = finish_rollout(
                    list(completion.token_ids), self.tokenizer, item.vocab, self.stop_ids
                )
                parsed = None
                if rollout.sampled_score is None:
                    parsed = parse_score(completion.text or "", item.record.scale)
                owners.append(i)
                sequences.append(list(item.prompt_ids) + list(rollout.response_ids))
                vocabs.append(item.vocab)
                partial.append((rollout, parsed))
        dists = self.score_distributions(sequences, vocabs)
        outcomes: list[list[SampleOutcome]] = [[] for _ in items]
        for owner, (rollout, parsed), (p, leak) in zip(owners, partial, dists, strict=True):
            outcomes[owner].append(
                SampleOutcome(
                    probs=p,
                    leaked=leak,
                    status=rollout.status,
                    feedback=rollout.feedback,
                    sampled_score=rollout.sampled_score,
                    parsed_score=parsed,
                )
            )
        for i, got in enumerate(outcomes):
            if not got:
                raise RuntimeError(f"vLLM returned no completion for item {items[i].record.id}")
        return outcomes
