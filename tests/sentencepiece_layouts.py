"""A SentencePiece-style tokenizer (Llama-2, Mistral, Prometheus-2 layouts) built offline,
for the tests of code that must read any tokenizer's text right. Imported by test modules
(``tests/`` is on ``sys.path`` under pytest's default import mode)."""

from __future__ import annotations

import functools


@functools.cache
def sentencepiece_tokenizer(legacy: bool):
    """A Llama-2 style tokenizer trained here, laid out as ``transformers`` converts a
    SentencePiece model: word-start marker ``▁`` (``legacy``: prepended by the normalizer, as
    Mistral's; else by the pre-tokenizer), digits split, byte fallback (``<0xNN>`` tokens for
    characters outside the vocabulary) and a decoder that strips the text's first space. A
    token decoded alone loses its word-start space (``"▁good"`` -> ``"good"``)."""
    import json

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [f"Feedback: the response is good. [RESULT] {k}" for k in range(1, 11)] * 50
    corpus += [f"So the overall score is {k}" for k in range(1, 6)] * 50
    corpus += ["fine.\n x The response covers the items."] * 20
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    if legacy:
        tok.normalizer = normalizers.Sequence(
            [normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")]
        )
    scheme = "never" if legacy else "first"
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme=scheme, split=True),
            pre_tokenizers.Digits(individual_digits=True),
        ]
    )
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace("\u2581", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"])
    tok.train_from_iterator(corpus, trainer)
    spec = json.loads(tok.to_str())  # add the 256 byte tokens, as a SentencePiece model has
    vocab = spec["model"]["vocab"]
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>",
        unk_token="<unk>",
    )
