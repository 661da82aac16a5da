"""What a fresh install needs is declared: the `graft` extra covers the harness."""

import ast
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# import name -> distribution name, where they differ
DISTRIBUTIONS = {
    "sklearn": "scikit-learn",
    "PIL": "pillow",
    "torch_pruning": "torch-pruning",
}


def _requirement_names(requirements):
    return {re.split(r"[<>=!\[ ;]", r, maxsplit=1)[0].lower() for r in requirements}


def _third_party_imports(folder):
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    local = {"graft", "maxvol_kit"}
    return {n for n in names if n not in sys.stdlib_module_names and n not in local}


def test_the_graft_extra_installs_everything_graft_run_imports():
    project = PYPROJECT["project"]
    declared = _requirement_names(project["dependencies"]) | _requirement_names(
        project["optional-dependencies"]["graft"]
    )
    needed = {
        DISTRIBUTIONS.get(n, n).lower()
        for folder in ("harness", "selection", "loop", "grass", "prune")
        for n in _third_party_imports(ROOT / "graft" / folder)
    } | {DISTRIBUTIONS.get(n, n).lower() for n in _third_party_imports(ROOT / "graft")}
    # graft.lightning, graft.hf and graft.prune_model have their own extras;
    # threadpoolctl and codecarbon (the energy meter) are used when installed.
    own = {"lightning": "lightning", "transformers": "hf", "torch-pruning": "prune"}
    for name, extra in own.items():
        extra_names = _requirement_names(project["optional-dependencies"][extra])
        assert name in extra_names, f"{name} is not in the {extra} extra"
    needed -= {*own, "threadpoolctl", "codecarbon"}
    assert needed <= declared, f"missing from the graft extra: {needed - declared}"


def test_the_project_files_are_there():
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    citation = (ROOT / "CITATION.cff").read_text()
    assert citation.startswith("cff-version: 1.2.0")
    assert f"version: {PYPROJECT['project']['version']}" in citation
    assert "## Unreleased" in (ROOT / "CHANGELOG.md").read_text()
