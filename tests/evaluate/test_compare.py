"""`realjudge compare`: two evaluation dirs paired by id, B's change over A bootstrapped on the
paired items; evaluations of different data are refused."""

import json

import numpy as np
import pytest

from realjudge.cli import main
from realjudge.evaluate.compare import compare_evals, paired_change
from realjudge.evaluate.metrics import paired_difference


def _write_eval(d, rows, *, data="embedded:test", reading="score-only + RAIL"):
    d.mkdir(parents=True)
    with open(d / "predictions.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    preds = [r["prediction"] for r in rows if r.get("prediction") is not None]
    gold = [r["gold"] for r in rows if r.get("prediction") is not None]
    meta = {
        "metrics": {"pearson": float(np.corrcoef(preds, gold)[0, 1]), "spearman": None},
        "config": {"model": str(d), "data_source": data, "reading": reading},
    }
    (d / "metrics.json").write_text(json.dumps(meta))
    return d


def _rows(gold, preds, ids=None):
    ids = ids or [f"r{i}" for i in range(len(gold))]
    return [
        {"id": i, "gold": g, "prediction": p, "status": "ok"}
        for i, g, p in zip(ids, gold, preds, strict=True)
    ]


@pytest.fixture
def pair(tmp_path):
    rng = np.random.default_rng(0)
    gold = rng.integers(1, 6, size=60).astype(float).tolist()
    noisy = (np.array(gold) + rng.normal(0, 1.5, size=60)).tolist()
    close = (np.array(gold) + rng.normal(0, 0.3, size=60)).tolist()
    a = _write_eval(tmp_path / "a", _rows(gold, noisy))
    # B graded the same items in another order, one item more and one failed row
    rows_b = _rows(gold, close)[::-1] + _rows([3.0], [2.0], ids=["extra"])
    rows_b[5] = {**rows_b[5], "prediction": None, "status": "error"}
    b = _write_eval(tmp_path / "b", rows_b, reading="CoT + RAIL")
    return a, b, gold, noisy, close, rows_b[5]["id"]


def test_pairs_by_id_and_matches_the_paired_bootstrap(pair):
    a, b, gold, noisy, close, failed = pair
    c = compare_evals(a, b, seed=3, n_boot=500)
    keep = [i for i in range(60) if f"r{i}" != failed]
    want = paired_difference(
        [noisy[i] for i in keep],
        [close[i] for i in keep],
        [gold[i] for i in keep],
        seed=3,
        n_boot=500,
    )
    assert c["n"] == 59 and c["shared_ids"] == 60
    assert c["pearson"] == want["pearson"] and c["spearman"] == want["spearman"]
    assert c["pearson"]["delta"] > 0 and c["pearson"]["ci"][0] > 0  # B is clearly better
    assert (c["a"]["only_here"], c["b"]["only_here"]) == (0, 1)
    assert c["b"]["reading"] == "CoT + RAIL"
    assert paired_change(a, b, seed=3, n_boot=500)["pearson"] == want["pearson"]
    swapped = compare_evals(b, a, seed=3, n_boot=500)
    assert swapped["pearson"]["delta"] == pytest.approx(-c["pearson"]["delta"])


def test_evaluations_of_different_data_are_refused(tmp_path, pair):
    a, *_ = pair
    other = _write_eval(tmp_path / "ood", _rows([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]), data="x:ood")
    with pytest.raises(ValueError, match="same data"):
        compare_evals(a, other)
    regold = _write_eval(
        tmp_path / "regold", _rows([5.0, 1.0, 2.0], [1.0, 2.0, 3.0]), data="embedded:test"
    )
    with pytest.raises(ValueError, match="did not grade the same data"):
        compare_evals(a, regold)
    with pytest.raises(FileNotFoundError, match="predictions.jsonl"):
        compare_evals(a, tmp_path / "missing")


def test_cli_prints_the_change_and_writes_json(pair, tmp_path, capsys):
    a, b, *_ = pair
    out = tmp_path / "cmp.json"
    assert main(["compare", str(a), str(b), "--n-boot", "200", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "paired items: 59 of 60 shared ids (0 only in A, 1 only in B)" in text
    assert "Pearson  B - A: +" in text
    saved = json.loads(out.read_text())
    assert saved["command"].startswith("realjudge compare ") and saved["n_boot"] == 200


def test_item_agreement_says_how_far_b_moved_from_a(tmp_path, capsys):
    """Two CoT readings of the same items: the mean and largest |B - A| over the items both
    predicted, and how many of the items both wrote a feedback for got the same one."""
    gold = [1.0, 2.0, 3.0, 4.0, 5.0]
    rows_a = _rows(gold, [1.0, 2.0, 3.0, 4.0, 5.0])
    rows_b = _rows(gold, [1.5, 2.0, 2.0, 4.0, None])
    for k, (ra, rb) in enumerate(zip(rows_a, rows_b, strict=True)):
        ra["feedback"] = f"checks {k}"
        rb["feedback"] = f"checks {k}" if k != 2 else "another chain"
    del rows_b[3]["feedback"]  # a row without a feedback (e.g. failed generation) is not counted
    a = _write_eval(tmp_path / "a", rows_a, reading="CoT + RAIL")
    b = _write_eval(tmp_path / "b", rows_b, reading="CoT + RAIL")
    items = compare_evals(a, b, n_boot=0)["items"]
    assert items["n"] == 4
    assert items["mean_abs_diff"] == pytest.approx((0.5 + 0 + 1 + 0) / 4)
    assert items["max_abs_diff"] == pytest.approx(1.0)
    assert (items["same_feedback"], items["with_feedback"]) == (3, 4)
    assert main(["compare", str(a), str(b), "--n-boot", "0"]) == 0
    line = "predictions |B - A|: mean 0.3750, largest 1.0000 over 4 items; the same feedback in "
    line += "3 of 4"
    assert line in capsys.readouterr().out


def test_score_only_readings_have_no_feedback_count(pair, capsys):
    a, b, gold, noisy, close, failed = pair
    items = compare_evals(a, b, n_boot=0)["items"]
    keep = [i for i in range(60) if f"r{i}" != failed]
    want = [abs(close[i] - noisy[i]) for i in keep]
    assert items["n"] == 59 and items["with_feedback"] == 0 and items["same_feedback"] == 0
    assert items["mean_abs_diff"] == pytest.approx(sum(want) / 59)
    assert items["max_abs_diff"] == pytest.approx(max(want))
    assert main(["compare", str(a), str(b), "--n-boot", "0"]) == 0
    out = capsys.readouterr().out
    assert "over 59 items\n" in out and "same feedback" not in out


def test_the_same_data_file_by_another_path_or_copy_is_the_same_data(tmp_path, monkeypatch):
    """One file named by a relative and an absolute path, or the same split written into two
    reproduce dirs (same bytes), is the same data; a file with other bytes is not."""
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "d1" / "test.jsonl"
    data.parent.mkdir()
    data.write_text('{"id": "r0"}\n')
    copy = tmp_path / "d2" / "test.jsonl"
    copy.parent.mkdir()
    copy.write_text(data.read_text())
    other = tmp_path / "other.jsonl"
    other.write_text('{"id": "r9"}\n')
    rows = _rows([1.0, 2.0, 3.0, 4.0], [1.2, 2.5, 2.9, 4.1])
    a = _write_eval(tmp_path / "a", rows, data=str(data))
    for name, spec in (("rel", "d1/test.jsonl"), ("copy", str(copy))):
        b = _write_eval(tmp_path / name, rows, data=spec)
        assert compare_evals(a, b, n_boot=20)["n"] == 4
    c = _write_eval(tmp_path / "c", rows, data=str(other))
    with pytest.raises(ValueError, match="same data"):
        compare_evals(a, c, n_boot=20)
