"""The environment files agree with each other and with what is installed."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]


def requirement_lines() -> list[str]:
    """The non-comment lines of requirements.txt."""
    lines = (line.split("#", 1)[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines())
    return [line for line in lines if line]


def test_environment_yml_pins_python_and_installs_requirements() -> None:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert env["name"] == "tradeoffs"
    assert env["channels"] == ["conda-forge"]
    deps = env["dependencies"]
    assert "python=3.11" in deps, f"environment.yml must pin python=3.11; has {deps}"
    assert "pip" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert "-r requirements.txt" in pip, "environment.yml's pip section must install requirements.txt"
    assert "-e ." in pip, "environment.yml's pip section must install the package itself (-e .)"


def test_python_pin_matches_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"


def test_every_requirement_is_pinned_exactly() -> None:
    lines = requirement_lines()
    assert lines, "requirements.txt is empty"
    loose = [line for line in lines if not re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.+!-]+", line)]
    assert not loose, f"requirements.txt lines not pinned with '==': {loose}"
    names = [Requirement(line).name.lower().replace("_", "-") for line in lines]
    assert len(names) == len(set(names)), "requirements.txt lists a package twice"


def test_installed_versions_match_requirements() -> None:
    wrong = []
    for line in requirement_lines():
        req = Requirement(line)
        pinned = next(iter(req.specifier)).version
        try:
            installed = version(req.name)
        except PackageNotFoundError:
            wrong.append(f"{req.name} (pinned {pinned}, not installed)")
            continue
        if Version(installed) != Version(pinned):
            wrong.append(f"{req.name} (pinned {pinned}, installed {installed})")
    assert not wrong, "installed packages differ from requirements.txt: " + ", ".join(wrong)


def test_package_lives_under_lib() -> None:
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"": "lib"}
    assert setuptools["packages"]["find"]["where"] == ["lib"]
    assert (REPO / "lib" / "tradeoffs" / "__init__.py").is_file()



def test_pyproject_declares_every_third_party_import() -> None:
    """`pip install` from the repository (what Colab does) brings everything `lib/tradeoffs` imports."""
    import ast
    import sys
    from importlib.metadata import packages_distributions

    from packaging.utils import canonicalize_name

    imported = set()
    for path in (REPO / "lib" / "tradeoffs").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"tradeoffs"}
    declared = {canonicalize_name(Requirement(r).name)
                for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    providers = packages_distributions()
    missing = {m: providers.get(m) for m in third_party
               if not {canonicalize_name(d) for d in providers.get(m, [m])} & declared}
    assert not missing, f"imported but not in pyproject.toml's dependencies: {missing}"
