"""The vLLM backend's glue, against a fake ``vllm`` module (no GPU, no vLLM here).

The fake answers score requests from the tiny transformers model (so its log-probabilities
are the real next-token log-probabilities at the requested position) and generation requests
from a script (so the cue handling is known). The real vLLM path is not exercised.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field

import pytest
import torch

from realjudge.data.records import JudgeRecord, Rubric
from realjudge.inference.judge import Judge, JudgeConfig
from realjudge.inference.vllm_backend import VLLMBackend, distribution_from_logprobs
from realjudge.scoring.vocab import ScoreVocab


def expectation(probs):
    """sum_k k * p_k on the 1..5 scale."""
    return sum((j + 1) * p for j, p in enumerate(probs))


RUBRIC = Rubric("Complete?", {k: f"level {k}" for k in range(1, 6)})


def records(n: int) -> list[JudgeRecord]:
    return [
        JudgeRecord(
            id=f"v{i}",
            instruction="Name the colours. " + "Please. " * (2 * i),
            response="red, blue" + ", green" * i,
            gold=float(1 + i),
            rubric=RUBRIC,
        )
        for i in range(n)
    ]


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


class ModernSamplingParams:
    """Accepts any keyword (like a recent vLLM with logprob_token_ids)."""

    def __init__(self, **kw):
        self.n = kw.pop("n", 1)
        self.max_tokens = kw.pop("max_tokens", 16)
        self.logprobs = kw.pop("logprobs", None)
        self.logprob_token_ids = kw.pop("logprob_token_ids", None)
        self.stop = kw.pop("stop", None) or []
        self.__dict__.update(kw)


class OldSamplingParams(ModernSamplingParams):
    def __init__(self, **kw):
        if "logprob_token_ids" in kw:
            raise TypeError("Unexpected keyword argument 'logprob_token_ids'")
        super().__init__(**kw)


@dataclass
class Completion:
    token_ids: list[int]
    text: str
    logprobs: list[dict] | None = None


@dataclass
class RequestOutput:
    outputs: list[Completion] = field(default_factory=list)


class FakeLLM:
    def __init__(self, model, tokenizer, script=None):
        self.model = model
        self.tok = tokenizer
        self.script = script or {}
        self.calls: list[tuple[list[dict], list]] = []

    def generate(self, prompts, params, use_tqdm=True):
        if not isinstance(params, list):
            params = [params] * len(prompts)
        self.calls.append((prompts, params))
        return [self._one(p["prompt_token_ids"], sp) for p, sp in zip(prompts, params, strict=True)]

    def _one(self, ids, sp):
        if sp.max_tokens == 1 and sp.logprobs is not None:
            with torch.no_grad():
                logits = self.model(torch.tensor([ids]), logits_to_keep=1).logits[0, -1]
            logp = torch.log_softmax(logits.float(), -1)
            top = torch.topk(logp, sp.logprobs).indices.tolist()
            wanted = set(top) | set(sp.logprob_token_ids or [])
            chosen = int(logp.argmax())
            lp = {t: Logprob(float(logp[t])) for t in wanted | {chosen}}
            return RequestOutput([Completion([chosen], self.tok.decode([chosen]), [lp])])
        key = len([c for c in self.calls if c[1][0].max_tokens != 1]) - 1
        texts = self.script[key][self._prompt_index(ids)]
        outs = []
        for text in texts[: sp.n]:
            gen = self.tok.encode(text, add_special_tokens=False) + [self.tok.eos_token_id]
            for cut in range(1, len(gen) + 1):  # stop strings, kept in the output
                if any(s in self.tok.decode(gen[:cut]) for s in sp.stop):
                    gen = gen[:cut]
                    break
            outs.append(Completion(gen, self.tok.decode(gen, skip_special_tokens=True)))
        return RequestOutput(outs)

    def _prompt_index(self, ids):
        return self.prompt_order.index(tuple(ids))


@pytest.fixture()
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.SamplingParams = ModernSamplingParams
    module.LLM = FakeLLM
    monkeypatch.setitem(sys.modules, "vllm", module)
    return module


def cfg(**kw):
    kw.setdefault("progress", False)
    return JudgeConfig(**kw)


def test_distribution_from_logprobs_math():
    lp = {10: Logprob(-1.0), 11: Logprob(-2.0), 99: -0.5}
    probs, leaked = distribution_from_logprobs(lp, [10, 11, 12], normalize=True)
    e1, e2 = torch.exp(torch.tensor(-1.0)).item(), torch.exp(torch.tensor(-2.0)).item()
    assert probs == pytest.approx([e1 / (e1 + e2), e2 / (e1 + e2), 0.0])
    assert leaked == pytest.approx(1 - e1 - e2)
    raw, _ = distribution_from_logprobs(lp, [10, 11, 12], normalize=False)
    assert raw == pytest.approx([e1, e2, 0.0])
    with pytest.raises(ValueError, match="max_logprobs"):
        distribution_from_logprobs(lp, [1, 2], normalize=True)


@pytest.mark.parametrize("normalize", [True, False])
def test_score_only_matches_the_transformers_backend(fake_vllm, tiny_model, tokenizer, normalize):
    recs = records(3)
    llm = FakeLLM(tiny_model, tokenizer)
    vj = Judge(llm, tokenizer, cfg(backend="vllm", normalize=normalize))
    assert isinstance(vj.backend, VLLMBackend)
    got = vj.predict_all(recs)
    want = Judge(
        tiny_model, tokenizer, cfg(backend="transformers", normalize=normalize)
    ).predict_all(recs)
    vocab = ScoreVocab.from_tokenizer(tokenizer)
    for g, w, rec in zip(got, want, recs, strict=True):
        assert g["id"] == rec.id and g["status"] == "ok"
        assert g["distribution"] == pytest.approx(w["distribution"], abs=1e-5)
        assert g["leaked_mass"] == pytest.approx(w["leaked_mass"], abs=1e-5)
        assert g["expected_score"] == pytest.approx(w["expected_score"], abs=1e-5)
    ((prompts, params),) = llm.calls
    for p, sp, rec in zip(prompts, params, recs, strict=False):
        assert p["prompt_token_ids"] == vj.prepare(rec).prompt_ids  # ends with the cue
        assert sp.max_tokens == 1 and sp.temperature == 0.0
        assert sp.logprob_token_ids == list(vocab.token_ids)
    assert vj.backend.exact_token_logprobs is True


def test_old_vllm_falls_back_to_top_logprobs(fake_vllm, tiny_model, tokenizer):
    fake_vllm.SamplingParams = OldSamplingParams
    recs = records(2)
    vj = Judge(FakeLLM(tiny_model, tokenizer), tokenizer, cfg(backend="vllm"))
    # a random model puts none of the score tokens in its top 20: a clear per-item error
    rows = vj.predict_all(recs)
    assert vj.backend.exact_token_logprobs is False
    assert all(r["status"].startswith("error: ValueError: none of the score tokens") for r in rows)
    # with the whole vocabulary returned, the result is exact again
    vj.backend.top_logprobs = len(tokenizer)
    rows = vj.predict_all(recs)
    want = Judge(tiny_model, tokenizer, cfg(backend="transformers")).predict_all(recs)
    for g, w in zip(rows, want, strict=True):
        assert g["distribution"] == pytest.approx(w["distribution"], abs=1e-5)


def test_cot_glue_positions_forced_cue_and_decode(fake_vllm, tiny_model, tokenizer):
    recs = records(3)
    script = {
        0: [
            ["Feedback: all there. [RESULT] 4 and then more", "Feedback: hmm. [RESULT] 2"],
            ["Feedback: no verdict at all", "Feedback: Score: 3"],
            ["Feedback: fine. [RESULT] 5", "Feedback: fine. [RESULT] 5"],
        ]
    }
    llm = FakeLLM(tiny_model, tokenizer, script)
    judge = Judge(llm, tokenizer, cfg(backend="vllm", cot=True, samples=2, mode="decode"))
    llm.prompt_order = [tuple(judge.prepare(r).prompt_ids) for r in recs]
    rows = judge.predict_all(recs)

    gen_prompts, gen_params = llm.calls[0]
    vocab = ScoreVocab.from_tokenizer(tokenizer)
    sp = gen_params[0]
    assert sp.n == 2 and sp.temperature == 1.0 and sp.top_p == 0.9 and sp.max_tokens == 256
    assert sp.stop == [vocab.cue_text + t for t in vocab.score_texts]
    assert sp.include_stop_str_in_output is True

    first, second, third = rows
    assert first["status"] == "ok" and first["n_forced"] == 0
    assert first["sample_decoded"] == [4, 2] and first["decoded_score"] == 3.0
    assert first["prediction"] == 3.0
    assert first["feedback"] == ["Feedback: all there. [RESULT] ", "Feedback: hmm. [RESULT] "]
    assert second["status"] == "forced_cue" and second["n_forced"] == 2
    assert second["sample_decoded"][1] == 3  # parsed from "Score: 3"
    assert second["n_decode_fallback"] == 1  # the first sample wrote no score at all
    assert third["decoded_score"] == 5.0 and third["n_decode_fallback"] == 0

    # score requests: prompt + feedback-up-to-the-cue, and their distributions are the model's
    score_prompts, score_params = llm.calls[1]
    assert len(score_prompts) == 6 and all(p.max_tokens == 1 for p in score_params)
    transformers = Judge(tiny_model, tokenizer, cfg(backend="transformers", cot=True)).backend
    for j, req in enumerate(score_prompts):
        rec_i, s = divmod(j, 2)
        prompt = list(llm.prompt_order[rec_i])
        assert req["prompt_token_ids"][: len(prompt)] == prompt
        tail = tokenizer.decode(req["prompt_token_ids"][len(prompt) :])
        fb = rows[rec_i]["feedback"][s]
        assert tail == fb and tail.endswith("[RESULT] ")
        ((probs, leaked),) = transformers._distributions(
            [prompt], [req["prompt_token_ids"][len(prompt) :]], [vocab]
        )
        assert rows[rec_i]["sample_expected"][s] == pytest.approx(expectation(probs), abs=1e-5)


def test_greedy_generation_params(fake_vllm, tiny_model, tokenizer):
    llm = FakeLLM(tiny_model, tokenizer, {0: [["Feedback: ok. [RESULT] 3"]]})
    judge = Judge(llm, tokenizer, cfg(backend="vllm", cot=True, max_new_tokens=32))
    rec = records(1)
    llm.prompt_order = [tuple(judge.prepare(rec[0]).prompt_ids)]
    row = judge.predict_all(rec)[0]
    sp = llm.calls[0][1][0]
    assert sp.n == 1 and sp.temperature == 0.0 and sp.top_p == 1.0 and sp.max_tokens == 32
    assert row["status"] == "ok" and row["decoded_score"] == 3 and row["samples"] == 1


def test_auto_backend_stays_on_transformers_without_gpu(fake_vllm, monkeypatch):
    from realjudge.inference import judge as judge_mod

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert judge_mod.resolve_backend("auto", "embedded") == "transformers"
    with pytest.raises(RuntimeError, match="CUDA"):
        judge_mod.resolve_backend("vllm", "embedded")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(judge_mod, "vllm_available", lambda: True)
    assert judge_mod.resolve_backend("auto", "embedded") == "vllm"
    assert judge_mod.resolve_backend("auto", "tiny") == "transformers"


def test_judge_and_vllm_backend_do_not_import_each_other():
    import subprocess

    code = (
        "import sys\n"
        "import realjudge.inference.vllm_backend\n"
        "assert 'realjudge.inference.judge' not in sys.modules, 'backend imported judge'\n"
        "import realjudge.inference.judge\n"
        "del sys.modules['realjudge.inference.vllm_backend']\n"
        "import importlib; importlib.reload(realjudge.inference.judge)\n"
        "assert 'realjudge.inference.vllm_backend' not in sys.modules, 'judge imported backend'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_cot_ends_at_the_end_tokens_of_the_checkpoint_generation_config(
    fake_vllm, tiny_model, tokenizer, tmp_path, monkeypatch
):
    """vLLM stops a generation at every ``eos_token_id`` of the checkpoint's
    generation_config.json, not only the tokenizer's: ``load_judge`` gives the backend the
    same end tokens, so the feedback ends there and the score is read after a forced cue
    (before, the end token was read as feedback text and the cue forced after it)."""
    from transformers import GenerationConfig

    from realjudge.inference import judge as judge_mod

    end = tokenizer.encode(" the", add_special_tokens=False)
    assert len(end) == 1 and end[0] != tokenizer.eos_token_id
    end_ids = {tokenizer.eos_token_id, end[0]}
    ckpt = tmp_path / "judge"
    tokenizer.save_pretrained(ckpt)
    GenerationConfig(eos_token_id=sorted(end_ids)).save_pretrained(ckpt)

    class EngineStoppingLLM(FakeLLM):
        """Cuts each completion after its first generation-config end token, as vLLM does."""

        def _one(self, ids, sp):
            out = super()._one(ids, sp)
            for c in out.outputs:
                cut = next((j for j, t in enumerate(c.token_ids) if t in end_ids), None)
                if cut is not None:
                    c.token_ids = c.token_ids[: cut + 1]
                    c.text = self.tok.decode(c.token_ids, skip_special_tokens=True)
            return out

    made: list[FakeLLM] = []

    def make_llm(**kw):
        assert kw["model"] == str(ckpt)
        made.append(EngineStoppingLLM(tiny_model, tokenizer, {0: [["Fine the rest. [RESULT] 4"]]}))
        return made[0]

    fake_vllm.LLM = make_llm
    monkeypatch.setattr(judge_mod, "resolve_backend", lambda backend, model: "vllm")
    judge = judge_mod.load_judge(str(ckpt), cfg(backend="vllm", cot=True, max_new_tokens=32))
    assert judge.backend.stop_ids == end_ids
    rec = records(1)
    (llm,) = made
    llm.prompt_order = [tuple(judge.prepare(rec[0]).prompt_ids)]
    row = judge.predict_all(rec)[0]
    assert sorted(llm.calls[0][1][0].stop_token_ids) == sorted(end_ids)
    vocab = ScoreVocab.from_tokenizer(tokenizer)
    assert row["status"] == "forced_cue"
    assert row["feedback"] == "Fine" + vocab.forced_cue_text("Fine")


def test_load_generation_config_reads_a_checkpoint_or_nothing(tmp_path, tokenizer):
    from transformers import GenerationConfig

    from realjudge.models import load_generation_config

    assert load_generation_config(tmp_path) is None  # a dir without generation_config.json
    GenerationConfig(eos_token_id=[2, 7]).save_pretrained(tmp_path)
    assert load_generation_config(tmp_path).eos_token_id == [2, 7]
    assert load_generation_config("no-such-org/no-such-model-xyz") is None  # hub unreachable
