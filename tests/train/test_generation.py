"""Rollout backends (:mod:`realjudge.train.generation`), tested at the boundary TRL exposes.

vLLM is not installed here (GPU only): a fake ``vllm`` module (``LLM``, ``SamplingParams``) is
put in ``sys.modules`` and TRL's ``VLLMClient`` is replaced by a fake with the same method
signatures (checked against TRL's). Everything between them and the trainer -- TRL's
``VLLMGeneration`` (engine set-up, weight sync, the server's gather / broadcast), our
backend, ``sample_groups`` and the training loop -- is the real code.
"""

from __future__ import annotations

import inspect
import json
import sys
import types
from contextlib import contextmanager
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from realjudge.train import build_config, train
from realjudge.train.config import ConfigError
from realjudge.train.generation import (
    HFRollouts,
    VLLMRollouts,
    generation_model,
    vllm_sampling_kwargs,
)

from ._helpers import (
    one_thread,  # noqa: F401  (autouse: one torch thread)
    quick_config,
)

vg_mod = pytest.importorskip("trl.generation.vllm_generation")
from trl.generation.vllm_client import VLLMClient  # noqa: E402

SCORES = (1, 2, 3, 4, 5)


def _text(seed: int | None, prompt: int, j: int) -> str:
    """The scripted completion ``j`` of a prompt: a short CoT (different for each ``j``, so
    REAL's advantages are not all zero), the cue, a score."""
    k = SCORES[((seed or 0) + prompt + j) % len(SCORES)]
    return f"Feedback: {('fine', 'poor', 'odd')[j % 3]} answer{'!' * j}. [RESULT] {k}"


# ---------------------------------------------------------------------------------------------
# fakes
# ---------------------------------------------------------------------------------------------


class FakeSamplingParams:
    def __init__(self, **kw):
        self.kw = kw


class _Weights:
    """Stands for ``llm_engine.model_executor.driver_worker.model_runner.model``."""

    def __init__(self, log):
        self.log = log

    def load_weights(self, weights):
        for name, tensor in weights:
            self.log.current[name] = tensor.detach().clone()
            self.log.loads += 1


class Log:
    """What the fakes saw: constructor kwargs, sampling requests, weights pushed."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.init: list[dict] = []
        self.requests: list[dict] = []
        self.current: dict[str, torch.Tensor] = {}
        self.seen_at_generate: list[dict[str, torch.Tensor]] = []
        self.loads = 0
        self.syncs = 0
        self.clients = 0

    def encode(self, text):
        return self.tokenizer.encode(text, add_special_tokens=False)


class FakeLLM:
    log: Log

    def __init__(self, **kw):
        self.log.init.append(kw)
        model = _Weights(self.log)
        self.llm_engine = SimpleNamespace(
            model_executor=SimpleNamespace(
                driver_worker=SimpleNamespace(model_runner=SimpleNamespace(model=model))
            )
        )

    def reset_prefix_cache(self):
        self.log.syncs += 1

    def generate(self, prompts, sampling_params=None, use_tqdm=True):
        self.log.seen_at_generate.append(dict(self.log.current))
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params]
        outs = []
        for i, (p, sp) in enumerate(zip(prompts, params, strict=True)):
            self.log.requests.append({"prompt": p["prompt_token_ids"], **sp.kw})
            comps = [
                SimpleNamespace(token_ids=self.log.encode(_text(sp.kw.get("seed"), i, j)))
                for j in range(sp.kw["n"])
            ]
            outs.append(SimpleNamespace(prompt_token_ids=p["prompt_token_ids"], outputs=comps))
        return outs


class FakeClient:
    """TRL's ``VLLMClient`` surface (same signatures, checked below), answering locally."""

    log: Log

    def __init__(
        self,
        base_url: str | None = None,
        host: str = "0.0.0.0",
        server_port: int = 8000,
        group_port: int = 51216,
        connection_timeout: float = 0.0,
    ):
        self.log.clients += 1
        self.log.init.append({"base_url": base_url, "connection_timeout": connection_timeout})

    def init_communicator(self, device: torch.device | str | int = 0):
        self.device = device

    def update_named_params(self, metadata, named_params):
        names = [m[0] for m in metadata]
        got = list(named_params)
        assert [n for n, _ in got] == names  # streamed in the announced order
        for name, tensor in got:
            self.log.current[name] = tensor.detach().clone()
            self.log.loads += 1

    def update_named_param(self, name: str, weights: torch.Tensor):
        self.update_named_params(
            [(name, str(weights.dtype), list(weights.shape))], [(name, weights)]
        )

    def update_model_params(self, model: torch.nn.Module):
        params = list(model.named_parameters())
        self.update_named_params([(n, str(p.dtype), list(p.shape)) for n, p in params], params)

    def reset_prefix_cache(self):
        self.log.syncs += 1

    def close_communicator(self):
        pass

    def generate(
        self,
        prompts: list[str] | list[list[int]],
        features: list[dict | None] | None = None,
        n: int = 1,
        repetition_penalty: float = 1.0,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        min_p: float = 0.0,
        max_tokens: int = 16,
        logprobs: int | None = 0,
        structured_outputs_regex: str | None = None,
        generation_kwargs: dict | None = None,
    ) -> dict[str, list[list[int]]]:
        self.log.seen_at_generate.append(dict(self.log.current))
        kw = dict(
            n=n,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            min_p=min_p,
            repetition_penalty=repetition_penalty,
            max_tokens=max_tokens,
            logprobs=logprobs,
            **(generation_kwargs or {}),
        )
        for p in prompts:
            self.log.requests.append({"prompt": list(p), **kw})
        return {
            "prompt_ids": [list(p) for p in prompts],
            "completion_ids": [
                self.log.encode(_text(None, i, j)) for i in range(len(prompts)) for j in range(n)
            ],
            "logprobs": None,
            "logprob_token_ids": None,
        }


@pytest.fixture()
def fakes(monkeypatch, tokenizer):
    """The fake ``vllm`` module and client wired into TRL's ``VLLMGeneration``."""
    log = Log(tokenizer)
    vllm = types.ModuleType("vllm")
    vllm.__spec__ = ModuleSpec("vllm", None)
    vllm.LLM, vllm.SamplingParams = FakeLLM, FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setattr(FakeLLM, "log", log, raising=False)
    monkeypatch.setattr(FakeClient, "log", log, raising=False)
    monkeypatch.setattr(vg_mod, "is_vllm_available", lambda *a, **k: True)
    monkeypatch.setattr(vg_mod, "LLM", FakeLLM, raising=False)
    monkeypatch.setattr(vg_mod, "VLLMClient", FakeClient)
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(var, "0" if "RANK" in var else "")  # restored after the test
        monkeypatch.delenv(var)
    return log


def test_fake_client_has_the_signatures_of_trls_client():
    for name in (
        "__init__",
        "init_communicator",
        "update_named_params",
        "update_named_param",
        "update_model_params",
        "reset_prefix_cache",
        "close_communicator",
        "generate",
    ):
        fake = inspect.signature(getattr(FakeClient, name))
        real = inspect.signature(getattr(VLLMClient, name))
        assert list(fake.parameters) == list(real.parameters), name
        for p in real.parameters.values():
            assert fake.parameters[p.name].default == p.default, (name, p.name)


# ---------------------------------------------------------------------------------------------
# pure parts and config
# ---------------------------------------------------------------------------------------------


def test_sampling_kwargs_match_the_hf_settings():
    kw = vllm_sampling_kwargs(
        num_samples=4,
        max_new_tokens=32,
        temperature=0.7,
        top_p=0.9,
        greedy=False,
        stop_strings=("[RESULT] 1", "[RESULT] 2"),
        stop_ids={7, 2},
    )
    assert kw["n"] == 4 and kw["max_tokens"] == 32
    assert (kw["temperature"], kw["top_p"], kw["top_k"]) == (0.7, 0.9, 0)
    assert kw["stop"] == ["[RESULT] 1", "[RESULT] 2"] and kw["include_stop_str_in_output"]
    assert kw["stop_token_ids"] == [2, 7]
    greedy = vllm_sampling_kwargs(
        num_samples=1,
        max_new_tokens=8,
        temperature=0.7,
        top_p=0.9,
        greedy=True,
        stop_strings=None,
        stop_ids=[],
    )
    assert (greedy["temperature"], greedy["top_p"], greedy["stop"]) == (0.0, 1.0, [])


def test_rollout_backend_keys_are_checked(tmp_path):
    cfg = build_config("real", overrides={"rollout_backend": "vllm", "vllm_mode": "server"})
    assert (cfg.rollout_backend, cfg.vllm_mode, cfg.vllm_server_port) == ("vllm", "server", 8000)
    with pytest.raises(ConfigError, match="rollout_backend"):
        build_config("grpo", overrides={"rollout_backend": "sglang"})
    with pytest.raises(ConfigError, match="vllm_mode"):
        build_config("grpo", overrides={"vllm_mode": "remote"})
    with pytest.raises(ConfigError, match="vllm_gpu_memory_utilization"):
        build_config("grpo", overrides={"vllm_gpu_memory_utilization": 1.5})


# ---------------------------------------------------------------------------------------------
# transformers generate: which helper gathers what
# ---------------------------------------------------------------------------------------------


class _Inner(torch.nn.Module):
    """A model whose ``generate`` records how it was called and what was gathered then."""

    def __init__(self, state):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))
        self.state = state
        self.is_gradient_checkpointing = False

    def generate(self, **kwargs):
        self.state["generate"] = dict(kwargs, gathered=list(self.state["gathered"]))
        return "out"


def _accelerator(kind, inner, wrapped, *, fsdp_version=None, zero_stage=None):
    plugin = SimpleNamespace(fsdp_version=fsdp_version) if fsdp_version else None
    ds = SimpleNamespace(zero_stage=zero_stage) if zero_stage else None
    return SimpleNamespace(
        distributed_type=SimpleNamespace(name=kind),
        state=SimpleNamespace(fsdp_plugin=plugin, deepspeed_plugin=ds),
        unwrap_model=lambda m: inner if m is wrapped else m,
    )


@pytest.mark.parametrize(
    "kind,fsdp_version,zero_stage,gathered,synced",
    [
        ("NO", None, None, [], False),
        ("MULTI_CPU", None, None, [], False),
        ("DEEPSPEED", None, 2, [], False),
        ("FSDP", 1, None, ["fsdp1-root"], True),
        ("FSDP", 2, None, [], True),
        ("DEEPSPEED", None, 3, ["zero3-all"], False),
    ],
)
def test_generation_model_gathers_sharded_weights(
    monkeypatch, kind, fsdp_version, zero_stage, gathered, synced
):
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    state: dict = {"gathered": []}
    inner = _Inner(state)
    wrapped = torch.nn.Sequential(inner)  # stands for the FSDP / DeepSpeed wrapper
    acc = _accelerator(kind, inner, wrapped, fsdp_version=fsdp_version, zero_stage=zero_stage)

    @contextmanager
    def summon(module, **kwargs):
        assert module is wrapped and kwargs.get("recurse") is False  # the top-level unit
        state["gathered"].append("fsdp1-root")
        yield
        state["gathered"].remove("fsdp1-root")

    monkeypatch.setattr(FSDP, "summon_full_params", staticmethod(summon))

    @contextmanager
    def gathered_parameters(params):
        assert [id(p) for p in params] == [id(p) for p in wrapped.parameters()]
        state["gathered"].append("zero3-all")
        yield
        state["gathered"].remove("zero3-all")

    deepspeed = types.ModuleType("deepspeed")
    deepspeed.zero = SimpleNamespace(GatheredParameters=gathered_parameters)
    monkeypatch.setitem(sys.modules, "deepspeed", deepspeed)

    with generation_model(acc, wrapped) as gen:
        assert HFRollouts(gen).model is gen
        gen.generate(input_ids=None)
    assert state["generate"]["gathered"] == gathered
    assert state["generate"].get("synced_gpus", False) is synced
    assert state["gathered"] == []  # released afterwards


# ---------------------------------------------------------------------------------------------
# vLLM: whole training runs against the fakes
# ---------------------------------------------------------------------------------------------


def _exported_params(out):
    from safetensors.torch import load_file

    return load_file(str(out / "model.safetensors"))


@pytest.mark.parametrize("mode", ["colocate", "server"])
def test_vllm_rollouts_train_with_synced_weights(fakes, tmp_path, tokenizer, mode):
    over = dict(
        rollout_backend="vllm",
        vllm_mode=mode,
        vllm_gpu_memory_utilization=0.25,
        vllm_server_host="10.0.0.7",
        vllm_server_port=8123,
        mini_batch_size=2,  # two optimiser steps per training step
        temperature=0.8,
        top_p=0.95,
        max_steps=2,
    )
    cfg = quick_config("real", tmp_path, name=mode, **over)
    train(cfg)
    log = fakes
    G, P = cfg.num_generations, cfg.batch_size

    # the engine: one per run, built as configured
    if mode == "colocate":
        assert len(log.init) == 1
        assert log.init[0]["gpu_memory_utilization"] == 0.25
        assert log.init[0]["max_model_len"] == cfg.max_prompt_tokens + cfg.max_new_tokens
    else:
        assert log.clients == 1
        assert log.init[0]["base_url"] == "http://10.0.0.7:8123"  # vllm_server_host/port

    # sampling: n = G per distinct prompt, the HF path's settings, P prompts a step
    assert len(log.requests) == P * cfg.max_steps
    vocab_stops = None
    for r in log.requests:
        assert r["n"] == G and r["max_tokens"] == cfg.max_new_tokens
        assert (r["temperature"], r["top_p"], r["top_k"]) == (0.8, 0.95, 0)
        assert r["include_stop_str_in_output"] and tokenizer.eos_token_id in r["stop_token_ids"]
        vocab_stops = vocab_stops or r["stop"]
        assert r["stop"] == vocab_stops and any("3" in s for s in r["stop"])
    if mode == "colocate":  # one seed per prompt, none repeated
        seeds = [r["seed"] for r in log.requests]
        assert len(set(seeds)) == len(seeds)
    else:  # one request per call: no seed (it would be shared by every prompt)
        assert all("seed" not in r for r in log.requests)

    # rollouts parsed into the same Rollout objects: every scripted completion wrote a score
    rows = [json.loads(x) for x in (tmp_path / mode / "train_log.jsonl").read_text().splitlines()]
    assert [r["rollout/score_written_rate"] for r in rows] == [1.0, 1.0]
    assert all(r["rollout/forced_cue_rate"] == 0.0 for r in rows)

    # weights: every parameter pushed before each rollout, the updated ones before the second
    names = {n for n, _ in _tiny_named_params(tokenizer)}
    assert len(log.seen_at_generate) == cfg.max_steps
    assert log.syncs == cfg.max_steps  # one push per rollout, however many updates between
    assert log.loads == len(names) * cfg.max_steps
    first, second = log.seen_at_generate
    assert set(first) == set(second) == names
    start = dict(_tiny_named_params(tokenizer))
    assert all(torch.equal(first[n], start[n]) for n in names)
    after_one = _exported_params(_one_step_run(tmp_path, over))
    # (the same first step in a second run agrees to float noise, ~1e-6; an update is ~3e-3)
    assert all(torch.allclose(second[n], after_one[n], atol=1e-5, rtol=0) for n in after_one)
    assert all((second[n] - start[n]).abs().max() > 1e-3 for n in names)


def _tiny_named_params(tokenizer):
    from realjudge.models import build_tiny_model

    return list(build_tiny_model(tokenizer, seed=0).named_parameters())


def _one_step_run(tmp_path, over):
    """The same run stopped after its first step: the weights vLLM must sample step 2 from."""
    cfg = quick_config(
        "real", tmp_path, name="one-" + over["vllm_mode"], **{**over, "max_steps": 1}
    )
    return train(cfg).out


def test_server_mode_talks_to_the_server_from_the_main_process_only(fakes, monkeypatch, tokenizer):
    """Process 1 of 2: no client, no request; it takes part in the gather and gets its own
    completions from the main process's broadcast (TRL's ``VLLMGeneration``)."""
    model = torch.nn.Linear(2, 2)
    acc = SimpleNamespace(
        distributed_type=SimpleNamespace(name="MULTI_GPU"),
        state=SimpleNamespace(fsdp_plugin=None, deepspeed_plugin=None),
        is_main_process=False,
        process_index=1,
        num_processes=2,
        device=torch.device("cpu"),
        unwrap_model=lambda m: m,
        wait_for_everyone=lambda: None,
    )
    cfg = build_config("grpo", overrides={"rollout_backend": "vllm", "vllm_mode": "server"})
    ctx = SimpleNamespace(cfg=cfg, accelerator=acc, tokenizer=tokenizer)
    backend = VLLMRollouts.create(ctx, model)
    assert fakes.clients == 0 and backend.engine.mode == "server"

    mine = [[5, 6], [7, 8]]
    theirs = [[1, 2], [3, 4]]  # the main process's prompts
    G = 2
    gathered = []
    monkeypatch.setattr(
        vg_mod,
        "gather_object",
        lambda x: gathered.append(x) or [p for p in theirs for _ in range(G)] + x,
    )
    completions = [[100 + i] for i in range(len(theirs + mine) * G)]

    def broadcast(objs, from_process=0):
        objs[0] = (theirs + mine, completions, None, None)

    monkeypatch.setattr(vg_mod, "broadcast_object_list", broadcast)
    out = backend.sample(tokenizer, mine, num_samples=G, max_new_tokens=4, stop_strings=["x"])
    assert gathered[0] == [p for p in mine for _ in range(G)]  # then the (absent) images
    assert out == completions[len(theirs) * G :]
    assert fakes.requests == [] and fakes.clients == 0


def test_fsdp1_generation_gathers_the_top_level_unit(tmp_path):
    """A real 2-process FSDP1 run on CPU (gloo, torchrun): greedy rollouts through
    :func:`generation_model` equal the unsharded model's on both processes; the former code
    (the unwrapped module, root parameters left sharded) does not get that far."""
    import os
    import subprocess

    script = Path(__file__).with_name("fsdp_generation_check.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*cmd, str(script)], capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(r["rank"] for r in rows) == [0, 1]
    assert all(r["equal"] for r in rows)
    assert all(r["old"] != "equal" for r in rows)
