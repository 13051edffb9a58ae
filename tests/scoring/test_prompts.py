"""render_prompt with a chat template: thinking switched off where the template reads it."""

from __future__ import annotations

import copy

import pytest

from realjudge.data.records import JudgeRecord
from realjudge.scoring.prompts import build_messages, get_format, render_prompt

# A Qwen3-style template: a generation prompt opens a thinking block unless the caller passes
# ``enable_thinking=False``, in which case it writes an empty, closed one and the answer follows.
THINKING_TEMPLATE = (
    "{%- for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{ '<think>\\n\\n</think>\\n\\n' }}"
    "{%- else %}"
    "{{ '<think>\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)
PLAIN_TEMPLATE = (
    "{%- for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)

RECORD = JudgeRecord(id="a", instruction="Say hi.", response="hi", gold=4)


@pytest.fixture()
def templated(tokenizer):
    """``with_template(t)``: a copy of the SmolLM2 tokenizer whose chat template is ``t``."""

    def with_template(template: str):
        tok = copy.deepcopy(tokenizer)
        tok.chat_template = template
        return tok

    return with_template


def test_a_thinking_template_takes_its_non_thinking_branch(templated):
    tok = templated(THINKING_TEMPLATE)
    # the template does open a thinking block when not told otherwise
    messages = [{"role": "user", "content": "x"}]
    default = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert default.endswith("<|im_start|>assistant\n<think>\n")
    prompt = render_prompt(RECORD, tok)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert prompt.count("<think>") == prompt.count("</think>") == 1  # no open thinking block
    assert "Say hi." in prompt


@pytest.mark.parametrize("template", [PLAIN_TEMPLATE, None], ids=["plain", "smollm2"])
def test_a_template_without_the_switch_ignores_it(templated, tokenizer, template):
    tok = templated(template) if template is not None else tokenizer
    messages = build_messages(RECORD, get_format("result"))
    plain = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert render_prompt(RECORD, tok) == plain
    assert "<think>" not in plain
