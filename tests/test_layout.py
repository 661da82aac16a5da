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
