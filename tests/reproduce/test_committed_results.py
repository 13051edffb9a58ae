"""The results committed under docs/results/ (the numbers behind docs/results.md): every
experiment JSON, seed parts included, validates against the schema and its stored claims are
the ones its per-seed numbers give."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from realjudge.reproduce.report import stale_claims, validate_results_json

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = [
    p
    for p in sorted((ROOT / "docs" / "results").rglob("*.json"))
    if "preset" in json.loads(p.read_text())  # curves and bench JSONs have their own shapes
]


def test_there_are_committed_results():
    assert EXPERIMENTS, "docs/results/ holds no experiment results"


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_results_validate_and_their_claims_are_current(path):
    data = json.loads(path.read_text())
    assert validate_results_json(data) == []
    assert stale_claims(data) == []
    assert data["commit"] != "unknown" and "dirty" not in data["commit"]
