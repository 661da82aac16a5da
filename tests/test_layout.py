"""The package boundaries the architecture promises, checked on the source."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def test_graft_uses_only_public_maxvol_kit_names():
    private = {
        (path.relative_to(ROOT).as_posix(), module)
        for path in (ROOT / "graft").rglob("*.py")
        for module in _imports(path)
        if module.startswith("maxvol_kit.")
        and any(part.startswith("_") for part in module.split(".")[1:])
    }
    assert not private, f"graft imports private maxvol_kit modules: {sorted(private)}"


def test_maxvol_kit_does_not_depend_on_graft():
    users = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "maxvol_kit").rglob("*.py")
        if any(m == "graft" or m.startswith("graft.") for m in _imports(path))
    }
    assert not users


def test_the_utils_names_are_importable():
    import maxvol_kit.utils as utils

    assert all(callable(getattr(utils, name)) for name in utils.__all__)


LIBRARY = ("selection", "loop", "grass", "prune")


def test_the_library_does_not_depend_on_the_harness():
    users = {
        path.relative_to(ROOT).as_posix()
        for package in LIBRARY
        for path in (ROOT / "graft" / package).rglob("*.py")
        if any(m.startswith("graft.harness") for m in _imports(path))
    }
    users |= {
        name
        for name in ("graft/__init__.py", "graft/_checks.py", "graft/_format.py")
        if any(m.startswith("graft.harness") for m in _imports(ROOT / name))
    }
    assert not users, f"library modules import the harness: {sorted(users)}"


def test_prune_needs_no_selection_or_training_loop_internals():
    imported = {
        m
        for path in (ROOT / "graft" / "prune").rglob("*.py")
        for m in _imports(path)
        if m.startswith("graft.") and not m.startswith("graft.prune")
    }
    # GraftBatch is accepted as calibration data, through its public name.
    assert imported <= {"graft._checks", "graft._features", "graft.loop"}, imported


def test_packages_import_only_each_others_public_names():
    """A graft subpackage reaches another one only through its __init__."""
    crossings = set()
    for package in (*LIBRARY, "harness"):
        for path in (ROOT / "graft" / package).rglob("*.py"):
            for m in _imports(path):
                parts = m.split(".")
                if (
                    len(parts) > 2
                    and parts[0] == "graft"
                    and parts[1] != package
                    and parts[1] in (*LIBRARY, "harness")
                ):
                    crossings.add((path.relative_to(ROOT).as_posix(), m))
    assert not crossings, sorted(crossings)
