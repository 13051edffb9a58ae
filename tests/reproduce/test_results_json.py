"""The repository results JSON (docs/results/<preset>.json): its schema, the export of a
reproduce dir, and the document built from the JSON alone (no model, no run dirs)."""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest

from realjudge.cli import main
from realjudge.reproduce.document import build_document
from realjudge.reproduce.presets import Benchmark, RunSpec
from realjudge.reproduce.report import (
    repository_json,
    stale_claims,
    validate_results_json,
    write_results,
)

BENCHES = [
    Benchmark("test", "embedded", "test", 5, "in"),
    Benchmark("ood", "embedded-ood", "ood", 5, "out"),
]
RUNS = [
    RunSpec("base"),
    RunSpec("RAFT", "raft", 8, cot=False),
    RunSpec("TRACT", "tract", 8),
    RunSpec("GRPO", "grpo", 4, init_from="TRACT"),
    RunSpec("REAL", "real", 4, init_from="TRACT"),
    RunSpec("REAL[beta=0.1]", "real", 4, init_from="TRACT", variant_of="REAL"),
]
ENV = {
    "cpu": "AMD EPYC",
    "gpu": None,
    "cpu_fast_bf16": True,
    "train_mixed_precision": "bf16",
    "eval_dtype": "bfloat16",
    "torch": "2.13.0+cpu",
    "threads": 2,
}
LIFT = {"base": 0.0, "RAFT": 0.1, "TRACT": 0.2, "GRPO": 0.25, "REAL": 0.4, "REAL[beta=0.1]": 0.3}


def fake_results(root) -> dict:
    """What run_reproduce gathers for a 3-seed run, with prediction files on disk."""
    rng = random.Random(0)
    seeds = [0, 1, 2]
    per_seed, curves, predictions, timings, throughput = {}, {}, {}, {}, {}
    signal: dict = {}
    for run in RUNS:
        per_seed[run.name] = {}
        for s in seeds:
            per_seed[run.name][str(s)] = {
                b.name: {
                    "pearson": round(LIFT[run.name] + rng.uniform(-0.1, 0.1), 6),
                    "spearman": rng.uniform(0, 0.5),
                    "rmse": rng.uniform(0.8, 1.5),
                    "decode_pearson": rng.uniform(0, 0.5),
                    "decode_spearman": rng.uniform(0, 0.5),
                    "forced_cue_rate": rng.uniform(0, 0.2),
                    "leaked_mass": None,
                    "check_accuracy": rng.uniform(0.4, 0.9) if run.cot else None,
                    "n_items": 5.0,
                }
                for b in BENCHES
            }
        curves[run.name] = {
            str(s): [[2, rng.uniform(0, 0.5)], [4, rng.uniform(0, 0.5)]] for s in seeds
        }
        timings[run.name] = {f"seed{s}_train_s": 10.0 + s for s in seeds}
        throughput[run.name] = {str(s): {"rollout_tokens_per_s": 50.0} for s in seeds}
        rl = run.method in ("grpo", "real")
        signal[run.name] = {
            str(s): {"tied_groups": 0.5 + 0.1 * s if rl else None, "sq_err": 0.01 * (s + 1)}
            for s in seeds
        }
        predictions[run.name] = {}
        for b in BENCHES:
            path = root / "seed0" / run.name / f"eval-{b.name}" / "predictions.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            rows = [{"gold": g, "expected_score": g + rng.uniform(-1, 1)} for g in (1, 2, 3, 4, 5)]
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
            predictions[run.name][b.name] = str(path)
    return {
        "preset": "cpu-test",
        "description": "A fake comparison",
        "command": "realjudge reproduce --preset cpu-test",
        "seeds": seeds,
        "benchmarks": [asdict(b) for b in BENCHES],
        "in_domain": ["test"],
        "out_of_domain": ["ood"],
        "runs": [asdict(r) for r in RUNS],
        "train_preset": "cpu",
        "common": {},
        "eval_max_new_tokens": 64,
        "per_seed": per_seed,
        "curves": curves,
        "throughput": throughput,
        "training_signal": signal,
        "environment": {str(s): dict(ENV) for s in seeds},
        "timings_s": {**timings, "total": {"wall_s": 1.0}},
        "predictions": predictions,
        "notes": "",
        "curve": {"benchmark": "test", "limit": 5, "points": 2},
    }


@pytest.fixture
def run_dir(tmp_path):
    out = tmp_path / "reproduce-cpu-test"
    out.mkdir()
    write_results(fake_results(out), out)
    return out


def _numbers(text: str) -> list[str]:
    return re.findall(r"[-+]?\d+\.\d+", text)


def test_exported_json_has_the_schema_and_the_claims_numbers(run_dir, tmp_path):
    to = tmp_path / "docs" / "results" / "cpu-test.json"
    assert main(["report", "--export", str(run_dir), "--to", str(to)]) == 0
    data = json.loads(to.read_text())
    assert validate_results_json(data) == []
    assert data["preset"] == "cpu-test" and data["seeds"] == [0, 1, 2]
    assert data["command"] == "realjudge reproduce --preset cpu-test"
    assert isinstance(data["commit"], str) and data["commit"]
    assert [(b["name"], b["n_items"], b["domain"]) for b in data["benchmarks"]] == [
        ("test", 5, "in"),
        ("ood", 5, "out"),
    ]
    assert [(r["name"], r["method"], r["steps"]) for r in data["runs"]][:3] == [
        ("base", None, 0),
        ("RAFT", "raft", 8),
        ("TRACT", "tract", 8),
    ]
    assert not {"predictions", "plots", "markdown"} & set(data)  # nothing points into the run dir
    # claim 1 is REAL minus RAFT on Pearson averaged over the two benchmarks, paired by seed
    ps = data["per_seed"]
    diffs = [
        sum(ps["REAL"][s][b]["pearson"] - ps["RAFT"][s][b]["pearson"] for b in ("test", "ood")) / 2
        for s in ("0", "1", "2")
    ]
    claim = next(c for c in data["claims"] if c["claim"].startswith("REAL above RAFT"))
    assert claim["difference"] == pytest.approx(sum(diffs) / 3)
    assert claim["ci_low"] < claim["difference"] < claim["ci_high"]
    assert claim["verdict"] in ("holds", "higher mean, not significant")
    assert stale_claims(data) == []
    assert data["scatter"]["REAL"]["test"][0][0] == 1.0  # the plot's points travel with it


def test_document_from_the_json_alone_equals_the_one_from_the_run_dir(run_dir, tmp_path):
    to = tmp_path / "json" / f"{run_dir.name}.json"  # same name: same plot file names
    assert main(["report", "--export", str(run_dir), "--to", str(to)]) == 0
    from_dir = build_document([run_dir], [], tmp_path / "a" / "results.md", command="x")
    run_md = (run_dir / "results.md").read_text()
    shutil.rmtree(run_dir)  # the JSON is all the second document gets
    from_json = build_document([to], [], tmp_path / "b" / "results.md", command="x")
    a, b = from_dir.read_text(), from_json.read_text()
    assert a == b
    assert _numbers(a) and _numbers(run_md)[:40] == _numbers(a.split("## Preset", 1)[1])[:40]
    assert "| REAL |" in b and "item checks test" in b
    for plot in ("curves", "scatter"):
        assert (tmp_path / "b" / "img" / f"{run_dir.name}-{plot}.png").stat().st_size > 1000
        assert f"(img/{run_dir.name}-{plot}.png)" in b


def test_cli_builds_the_document_from_json_files_and_bench_json(run_dir, tmp_path):
    to = tmp_path / "results" / "cpu-test.json"
    main(["report", "--export", str(run_dir), "--to", str(to)])
    bench = tmp_path / "results" / "bench-x.json"
    bench.write_text(json.dumps({"kind": "other", "command": "realjudge bench x", "markdown": "T"}))
    out = tmp_path / "doc" / "results.md"
    assert main(["report", "--results", str(to), str(bench), "--out", str(out)]) == 0
    doc = out.read_text()
    assert "## Preset `cpu-test`" in doc and "## Performance" in doc
    assert "### `realjudge bench x`" in doc


def test_schema_check_names_what_is_wrong(run_dir):
    good = repository_json(json.loads((run_dir / "results.json").read_text()))
    assert validate_results_json(good) == []

    def broken(edit):
        data = json.loads(json.dumps(good))
        edit(data)
        return validate_results_json(data)

    assert broken(lambda d: d.pop("commit")) == ["results: missing 'commit'"]
    assert broken(lambda d: d.update(seeds=[0, "1"])) == [
        "results.seeds: expected a list of integers"
    ]
    assert broken(lambda d: d["benchmarks"][0].update(n_items=5.0)) == [
        "benchmarks[0].n_items: expected int, got float"
    ]
    assert broken(lambda d: d["benchmarks"][1].update(domain="elsewhere"))
    assert broken(lambda d: d["runs"][1].pop("steps")) == ["runs[1]: missing 'steps'"]
    assert broken(lambda d: d["runs"][1].update(steps=True))
    assert broken(lambda d: d["claims"][0].update(difference="0.1"))
    assert broken(lambda d: d["claims"][0].pop("verdict"))
    assert broken(lambda d: d["per_seed"]["REAL"]["0"]["test"].update(pearson="high"))
    assert broken(lambda d: d.update(in_domain=["nope"]))
    assert broken(lambda d: d["per_seed"].pop("GRPO")) == [
        "runs[3]: no per_seed results for 'GRPO'"
    ]
    assert validate_results_json([]) == ["results: expected an object, got list"]


def test_report_refuses_a_bad_json_before_writing(run_dir, tmp_path, capsys):
    data = repository_json(json.loads((run_dir / "results.json").read_text()))
    del data["runs"][0]["steps"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    out = tmp_path / "doc.md"
    assert main(["report", "--results", str(bad), "--out", str(out)]) == 2
    assert "runs[0]: missing 'steps'" in capsys.readouterr().err
    assert not out.exists()


def test_a_hand_edited_number_makes_the_stored_claims_stale(run_dir):
    data = repository_json(json.loads((run_dir / "results.json").read_text()))
    for s in ("0", "1", "2"):
        for b in ("test", "ood"):
            data["per_seed"]["REAL"][s][b]["pearson"] = -0.5
    assert "REAL above RAFT (pearson, average over benchmarks)" in stale_claims(data)


def test_check_accuracy_intervals_stay_within_zero_and_one(run_dir):
    data = json.loads((run_dir / "results.json").read_text())
    for per in data["aggregate"].values():
        for m in per.values():
            lo, hi = m["check_accuracy"]["ci95"]
            assert lo is None or 0.0 <= lo <= hi <= 1.0


def _seed_part(data: dict, seeds: list[int], commit: str) -> dict:
    """``data`` as if only ``seeds`` had been run (one session's share), exported."""
    keep = {str(s) for s in seeds}
    part = json.loads(json.dumps(data))
    part["seeds"] = seeds
    for key in ("per_seed", "curves", "throughput", "training_signal"):
        part[key] = {r: {s: v for s, v in t.items() if s in keep} for r, t in part[key].items()}
    part["environment"] = {s: e for s, e in part["environment"].items() if s in keep}
    part["timings_s"] = {
        r: {k: v for k, v in t.items() if not k.startswith("seed") or k[4:].split("_")[0] in keep}
        for r, t in part["timings_s"].items()
    }
    part["command"] = f"realjudge reproduce --preset cpu-test --first-seed {seeds[0]}"
    part["commit"] = commit
    for key in ("aggregate", "claims", "best_runs"):
        part.pop(key, None)
    return repository_json(part)


def test_merging_one_seed_a_session_equals_the_three_seed_run(run_dir, tmp_path):
    whole = repository_json(json.loads((run_dir / "results.json").read_text()))
    files = []
    for seeds in ([2], [0], [1]):  # any order
        f = tmp_path / f"seed{seeds[0]}.json"
        f.write_text(json.dumps(_seed_part(whole, seeds, commit="abc")))
        files.append(str(f))
    to = tmp_path / "merged.json"
    assert main(["report", "--merge", *files, "--to", str(to)]) == 0
    merged = json.loads(to.read_text())
    assert validate_results_json(merged) == []
    assert merged["seeds"] == [0, 1, 2] and merged["commit"] == "abc"
    for key in (
        "per_seed",
        "curves",
        "throughput",
        "training_signal",
        "environment",
        "aggregate",
        "claims",
        "best_runs",
    ):
        assert merged[key] == whole[key], key
    assert merged["timings_s"]["REAL"] == whole["timings_s"]["REAL"]
    assert merged["command"].split("; ")[0].endswith("--first-seed 0")
    assert stale_claims(merged) == []


def test_merge_refuses_other_designs_and_shared_seeds(run_dir, tmp_path):
    from realjudge.reproduce.report import merge_results

    whole = repository_json(json.loads((run_dir / "results.json").read_text()))
    a, b = _seed_part(whole, [0], "abc"), _seed_part(whole, [1], "abd")
    other = json.loads(json.dumps(b))
    other["runs"][1]["max_steps"] = 99
    with pytest.raises(ValueError, match="runs"):
        merge_results([a, other])
    with pytest.raises(ValueError, match=r"seeds \[0\]"):
        merge_results([a, _seed_part(whole, [0, 2], "abc")])
    assert merge_results([a, b])["commit"] == "abc+abd"  # different commits: kept, warned


def test_merge_records_and_reports_each_seeds_machine(run_dir, tmp_path, caplog):
    """Seeds run in different sessions may land on machines where ``auto`` resolves to a
    different precision: the merge keeps each seed's record, warns, and the document says it."""
    from realjudge.reproduce.report import (
        environment_md,
        merge_results,
        precision_of,
        render_results,
    )

    whole = repository_json(json.loads((run_dir / "results.json").read_text()))
    parts = [_seed_part(whole, [s], "abc") for s in (0, 1, 2)]
    intel = {**ENV, "cpu": "Intel Xeon", "cpu_fast_bf16": False, "cpu_bf16_features": []}
    parts[2]["environment"] = {
        "2": {
            **intel,
            "train_mixed_precision": "no",
            "eval_dtype": "float32",
            "decode_attention": "sdpa",
            "top_p": "sort",
        }
    }
    with caplog.at_level("WARNING"):
        same = merge_results(parts[:2])
    assert "same kind of machine" not in caplog.text
    assert environment_md(same) == (
        "Machines: seeds 0, 1: AMD EPYC, 2 threads, training bf16 autocast, evaluation bfloat16."
    )
    with caplog.at_level("WARNING"):
        mixed = merge_results(parts)
    assert "same kind of machine" in caplog.text
    assert mixed["environment"]["2"]["cpu"] == "Intel Xeon"
    md = environment_md(mixed)
    assert "seeds 0, 1: AMD EPYC" in md
    assert (
        "seed 2: Intel Xeon, 2 threads, training fp32, evaluation float32, decoding with sdpa "
        "attention, top-p nucleus by sort" in md
    )
    assert md in render_results(mixed)
    # a seed trained by `reproduce --jobs 2`, on a Xeon run as an EPYC (oneDNN capped)
    jobs = {**ENV, "cpu": "Intel Xeon", "jobs": 2, "threads": 1}
    assert precision_of({**jobs, "onednn_max_cpu_isa": "AVX512_CORE_BF16"}).startswith(
        "Intel Xeon, oneDNN capped at AVX512_CORE_BF16, 2 runs at once of 1 thread each, "
        "training bf16 autocast"
    )
    amx = {**ENV, "cpu": "Intel Xeon", "cpu_bf16_features": ["amx_bf16", "avx512_bf16"]}
    assert precision_of(amx).startswith("Intel Xeon (amx_bf16, avx512_bf16), 2 threads")
    del parts[1]["environment"]  # a part exported before seeds recorded their machine
    assert environment_md(merge_results(parts[:2])).endswith("; seed 1: not recorded.")


def test_schema_check_rejects_a_malformed_environment(run_dir):
    data = repository_json(json.loads((run_dir / "results.json").read_text()))
    data["environment"] = {"0": "AMD"}
    assert validate_results_json(data) == ["results.environment: expected {seed: {field: value}}"]


def test_the_run_table_shows_what_each_run_had_to_learn_from(run_dir):
    """Tied groups and the training squared error come from the JSON (means over seeds), so a
    document can quote them; a method that does not log one shows ``-``."""
    doc = (run_dir / "results.md").read_text()
    header = next(line for line in doc.splitlines() if line.startswith("| run | method"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    tied, sq = cols.index("tied groups"), cols.index("train sq err")
    rows = {
        cells[0]: cells
        for line in doc.splitlines()
        if line.startswith("| ")
        and len(cells := [c.strip() for c in line.strip("|").split("|")]) == len(cols)
    }
    assert rows["REAL"][tied] == "0.60" and rows["REAL"][sq] == "0.020"  # seeds 0, 1, 2
    assert rows["RAFT"][tied] == "-" and rows["base"][tied] == "-"
    assert "`frac_groups_zero_std`" in doc


def test_the_document_states_the_smallest_detectable_difference(run_dir):
    """With 3 seeds, each claim's paired interval half-width; with fewer, also what 3 would
    give at the spread seen."""
    from realjudge.reproduce.report import claims_of, detectable_md

    data = json.loads((run_dir / "results.json").read_text())
    doc = (run_dir / "results.md").read_text()
    line = next(x for x in doc.splitlines() if x.startswith("Smallest difference"))
    real_raft = next(c for c in data["claims"] if c["claim"].startswith("REAL above RAFT"))
    half = (real_raft["ci_high"] - real_raft["ci_low"]) / 2
    assert f"REAL - RAFT +-{half:.3f}" in line and "over 3 seeds" in line
    assert "would give" not in line
    two = _seed_part(repository_json(data), [0, 1], "abc")
    from realjudge.reproduce.report import complete_results

    two = complete_results(two)
    text = detectable_md(claims_of(two), 2)
    assert "over 2 seeds" in text and "3 seeds would give" in text
    assert detectable_md(claims_of(_seed_part(repository_json(data), [0], "abc")), 1) is None


def test_the_document_names_the_commit_of_the_code_not_of_its_folder(tmp_path, monkeypatch):
    """``realjudge report --out`` into another repository (or none): the header's commit is the
    code's, as results.json records it."""
    from realjudge.reproduce import document

    def fake_commit(cwd="."):
        return "code" if Path(cwd).resolve() == Path(document.__file__).parent.resolve() else "x"

    monkeypatch.setattr(document, "git_commit", fake_commit)
    out = tmp_path / "elsewhere" / "results.md"
    out.parent.mkdir()
    document.build_document([], [], out, command="realjudge report")
    assert "at commit `code`." in out.read_text()
