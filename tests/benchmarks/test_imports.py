"""Every benchmark module imports: their names of graft and maxvol_kit exist."""

import importlib
from pathlib import Path

import pytest

BENCHMARKS = sorted(
    p.stem for p in (Path(__file__).resolve().parents[2] / "benchmarks").glob("*.py")
)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_the_benchmark_imports(name):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    importlib.import_module(name)
