"""The package as users get it: every third-party module the packages import is a declared
runtime dependency, the files the code reads by default are in the tree, and a wheel built from
the repo installs into an empty venv where ``copyloop`` starts, checks copy and every module
imports (issue: an installed wheel could not start the ranker without scikit-learn)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.test_architecture import PACKAGES, project_files, read_sources, third_party

REPO = Path(__file__).resolve().parents[1]
PRODUCT = REPO / "examples" / "products" / "scarf-zh.json"
COPY = "限时8折 羊毛围巾仅需¥159"

# Run inside the new venv: import every module of the packages, and say where each came from so
# the test can tell the installed wheel from the checkout.
IMPORT_ALL = f"""
import importlib, json, pkgutil
packages = {list(PACKAGES)!r}
files = {{}}
for name in packages:
    package = importlib.import_module(name)
    files[name] = package.__file__
    for info in pkgutil.walk_packages(package.__path__, prefix=name + "."):
        if not info.name.endswith(".__main__"):  # importing it would run the command line
            files[info.name] = importlib.import_module(info.name).__file__
from generator.model import BOOTSTRAP_MODEL
from service.commands.cmd_demo import DEFAULT_SCENARIO
from streams.kafka_local import _default_deploy_dir
from service.dashboard.page import template
template()  # the dashboard's page is package data: raises when the wheel lacks it
data = [BOOTSTRAP_MODEL / "config.json", DEFAULT_SCENARIO, _default_deploy_dir() / "pom.xml"]
print(json.dumps({{"modules": files, "missing": [str(p) for p in data if not p.is_file()]}}))
"""


def _declared() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}


def test_every_runtime_import_is_a_declared_dependency() -> None:
    distributions = packages_distributions()
    users = third_party(read_sources(project_files(REPO)))
    undeclared: dict[str, list[str]] = {}
    for name, modules in sorted(users.items()):
        if name in sys.stdlib_module_names or name == "__future__":
            continue
        dists = {canonicalize_name(d) for d in distributions.get(name, [])}
        if not dists & _declared():
            undeclared[f"{name} ({', '.join(sorted(dists)) or 'not installed'})"] = sorted(modules)
    assert not undeclared, f"imported but not in [project].dependencies: {undeclared}"


def test_files_read_by_default_are_in_the_tree() -> None:
    from generator.model import BOOTSTRAP_MODEL
    from service.commands.cmd_demo import DEFAULT_SCENARIO
    from streams.kafka_local import _default_deploy_dir

    assert (BOOTSTRAP_MODEL / "model.safetensors").is_file()
    assert DEFAULT_SCENARIO.is_file(), DEFAULT_SCENARIO
    assert (_default_deploy_dir() / "server.properties").is_file()


def _uv() -> str | None:
    local = REPO / ".cache" / "tools" / "bin" / "uv"
    return shutil.which("uv") or (str(local) if local.is_file() else None)


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (
        f"{' '.join(args)} → {done.returncode}\n{done.stdout}\n{done.stderr}"
    )
    return done


@pytest.mark.slow
def test_wheel_installs_and_runs_in_a_fresh_venv(tmp_path: Path) -> None:
    uv, python = _uv(), shutil.which("python3.11")
    if uv is None or python is None:
        pytest.skip("needs uv and python3.11 on PATH (scripts/bootstrap.sh installs uv)")
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    env["UV_PYTHON_DOWNLOADS"] = "never"
    dist, venv = tmp_path / "dist", tmp_path / "venv"
    # --offline: after scripts/bootstrap.sh uv's cache holds every locked file, found by the
    # lock's URLs (an index lookup would need the network). The venv gets the lock's runtime
    # closure (no groups); installing the wheel then resolves its own requirements against what
    # is there, so one the lock does not provide fails here.
    _run([uv, "build", "--offline", "--wheel", "--out-dir", str(dist), str(REPO)], REPO, env)
    [wheel] = dist.glob("copyloop-*.whl")
    sync = [uv, "sync", "--offline", "--locked", "--no-default-groups", "--no-install-project"]
    venv_env = {**env, "UV_PROJECT_ENVIRONMENT": str(venv)}
    _run([*sync, "--python", python, "--project", str(REPO)], tmp_path, venv_env)
    install = [uv, "pip", "install", "--offline", "--python", str(venv / "bin" / "python")]
    _run([*install, str(wheel)], tmp_path, env)

    # run from tmp_path, so neither the scripts nor `python -c` can see the checkout
    copyloop = str(venv / "bin" / "copyloop")
    assert "simulate" in _run([copyloop, "--help"], tmp_path, env).stdout
    check = [copyloop, "check", "--product", str(PRODUCT), "--text", COPY]
    assert '"passed": true' in _run(check, tmp_path, env).stdout
    out = _run([str(venv / "bin" / "python"), "-c", IMPORT_ALL], tmp_path, env).stdout
    report = json.loads(out.splitlines()[-1])
    assert not report["missing"], f"files the code reads are not in the wheel: {report['missing']}"
    modules: dict[str, str] = report["modules"]
    in_tree = {m for m in project_files(REPO) if not m.endswith(".__main__")}
    assert set(modules) == in_tree, "the wheel's modules differ from the tree's"
    outside = sorted(m for m, f in modules.items() if not f.startswith(str(venv)))
    assert not outside, f"imported from outside the venv: {outside}"
