"""scripts/install.sh's choice of environment, run with --dry-run against fake interpreters
(nothing is installed)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install.sh"
BASH = shutil.which("bash")


def _fake_python(path: Path, version: str) -> None:
    """An executable that answers install.sh's version probe with ``version`` ("3 10")."""
    path.write_text(f"#!{BASH}\necho '{version}'\n")
    path.chmod(0o755)


@pytest.fixture()
def project(tmp_path):
    """A copy of install.sh in an empty project, and a PATH holding only fake interpreters
    and the few tools the script calls."""
    root = tmp_path / "proj"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPT, root / "scripts" / "install.sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "mkdir", "ln", "rm"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    return root, bin_dir


def _dry_run(root: Path, bin_dir: Path, **env: str) -> subprocess.CompletedProcess:
    base = {"PATH": str(bin_dir), "HOME": str(root)}
    return subprocess.run(
        [BASH, str(root / "scripts" / "install.sh"), "--dry-run", "cpu"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_install_script_parses():
    assert subprocess.run([BASH, "-n", str(SCRIPT)], capture_output=True).returncode == 0


def test_an_active_virtual_environment_is_used(project):
    root, bin_dir = project
    r = _dry_run(root, bin_dir, VIRTUAL_ENV="/somewhere/env")
    assert r.returncode == 0, r.stderr
    assert "into the active virtual environment /somewhere/env" in r.stdout
    assert not (root / ".venv").exists()


def test_an_active_conda_environment_is_used_but_not_base(project):
    root, bin_dir = project
    _fake_python(bin_dir / "python3", "3 12")
    r = _dry_run(root, bin_dir, CONDA_PREFIX="/conda/envs/j", CONDA_DEFAULT_ENV="j")
    assert "into the active conda environment /conda/envs/j" in r.stdout
    r = _dry_run(root, bin_dir, CONDA_PREFIX="/conda", CONDA_DEFAULT_ENV="base")
    assert f"creating the project environment {root}/.venv" in r.stdout


def test_without_an_environment_it_creates_venv_with_the_first_python_311_or_newer(project):
    root, bin_dir = project
    _fake_python(bin_dir / "python3", "3 10")
    _fake_python(bin_dir / "python3.11", "3 11")
    r = _dry_run(root, bin_dir)
    assert r.returncode == 0, r.stderr
    assert f"creating the project environment {root}/.venv with {bin_dir}/python3.11" in r.stdout
    # $PYTHON is tried first
    _fake_python(bin_dir / "mypy3", "3 13")
    r = _dry_run(root, bin_dir, PYTHON="mypy3")
    assert r.stdout.strip().endswith(f"with {bin_dir}/mypy3")
    assert not (root / ".venv").exists()  # a dry run creates nothing


def test_an_existing_project_venv_is_reused(project):
    root, bin_dir = project
    (root / ".venv" / "bin").mkdir(parents=True)
    _fake_python(root / ".venv" / "bin" / "python", "3 11")
    r = _dry_run(root, bin_dir)
    assert f"into the project environment {root}/.venv" in r.stdout


def test_no_python_311_is_a_clear_error(project):
    root, bin_dir = project
    _fake_python(bin_dir / "python3", "3 10")
    r = _dry_run(root, bin_dir)
    assert r.returncode == 1 and "no Python >= 3.11 found" in r.stderr


def test_a_bad_target_is_a_usage_error(project):
    root, bin_dir = project
    r = subprocess.run(
        [BASH, str(root / "scripts" / "install.sh"), "--dry-run", "tpu"],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "usage:" in r.stderr


def test_ci_runs_the_install_script_inside_its_own_venv():
    """.ci/run activates .venv before install.sh, so the script takes the active branch and
    CI installs everything itself (no link needed: the environment is .venv)."""
    ci = (SCRIPT.parents[1] / ".ci" / "run").read_text()
    assert ci.index("source .venv/bin/activate") < ci.index("bash scripts/install.sh cpu")


def _install_into_fake_env(
    root: Path, bin_dir: Path, tmp_path: Path, **extra_env: str
) -> tuple[subprocess.CompletedProcess, Path, list[str]]:
    """Run the whole install script (cpu target) with an active fake environment whose python
    accepts every pip call and logs it: the result, the environment, and the logged calls."""
    env = tmp_path / "otherenv"
    (env / "bin").mkdir(parents=True)
    calls = tmp_path / "calls.txt"
    (env / "bin" / "python").write_text(f'#!{BASH}\necho "$*" >> {calls}\n')
    (env / "bin" / "python").chmod(0o755)
    r = subprocess.run(
        [BASH, str(root / "scripts" / "install.sh"), "cpu"],
        env={"PATH": str(bin_dir), "HOME": str(root), "VIRTUAL_ENV": str(env), **extra_env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    logged = calls.read_text().splitlines() if calls.exists() else []
    return r, env, logged


def test_an_install_into_another_environment_links_venv_bin_realjudge(project, tmp_path):
    """The whole script, with a fake environment whose python accepts every pip call: the
    README's `.venv/bin/realjudge` ends up pointing at that environment's script."""
    root, bin_dir = project
    r, env, pip_calls = _install_into_fake_env(root, bin_dir, tmp_path)
    assert r.returncode == 0, r.stderr
    link = root / ".venv" / "bin" / "realjudge"
    assert link.is_symlink() and os.readlink(link) == str(env / "bin" / "realjudge")
    assert any("torch==2.13.0" in c for c in pip_calls)
    assert any(c.endswith("-e .[dev]") for c in pip_calls)


def test_readme_set_up_lines_are_the_install_script_and_the_linked_main_job():
    """The README's first two lines: install.sh (which guarantees .venv/bin/realjudge), then
    the main job through that path, with arguments the CLI accepts."""
    from realjudge.cli import build_parser

    readme = (SCRIPT.parents[1] / "README.md").read_text()
    block = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    first, second = (line.split("#")[0].split() for line in block.strip().splitlines())
    assert first == ["bash", "scripts/install.sh", "cpu"]
    assert second[0] == ".venv/bin/realjudge"
    assert build_parser().parse_args(second[1:]).command == "quickstart"


@pytest.mark.parametrize(("index", "extra"), [(None, True), ("", False)])
def test_cpu_torch_comes_from_the_cpu_index_when_it_answers(project, tmp_path, index, extra):
    """PyPI's torch==2.13.0 is the CUDA build: the cpu target adds PyTorch's CPU index when
    it is reachable (the fake python answers the probe); REALJUDGE_TORCH_INDEX='' turns it
    off (a machine whose pip config already serves a CPU build)."""
    root, bin_dir = project
    extra_env = {} if index is None else {"REALJUDGE_TORCH_INDEX": index}
    r, _, pip_calls = _install_into_fake_env(root, bin_dir, tmp_path, **extra_env)
    assert r.returncode == 0, r.stderr
    torch_calls = [c for c in pip_calls if "torch==2.13.0" in c]
    assert len(torch_calls) == 1
    assert ("--extra-index-url https://download.pytorch.org/whl/cpu" in torch_calls[0]) is extra
