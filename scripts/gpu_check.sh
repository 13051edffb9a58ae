#!/usr/bin/env bash
# The prepared GPU check (src/realjudge/gpu_check.py): REAL and GRPO training steps on
# random-init SmolLM2-135M and Qwen3-0.6B shapes through the trainer's own code; prints JSON
# (REAL/GRPO step-time ratio, rollout and training tokens/s, MFU) and writes it to
# $OUT/gpu_check.json when $OUT is a directory, else runs/gpu_check.json (--out PATH).
#
# Runs from a plain checkout, nothing installed: PYTHONPATH=src, no network, no datasets/gguf.
#   bash scripts/gpu_check.sh                      # a GPU: both shapes, about 4-7 minutes
#   bash scripts/gpu_check.sh --device cpu --tiny  # CI: tiny shapes, seconds
#   bash scripts/gpu_check.sh --help               # every option and its default
# PYTHON picks the interpreter (default: python3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" -m realjudge.gpu_check "$@"
