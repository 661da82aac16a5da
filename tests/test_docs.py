"""The examples of the README and the docs run as written.

Every ``python`` block that starts with an import runs on its own, in a
fresh namespace; the blocks that do not are fragments (a method, one call)
and are skipped. The Dask-cluster block of docs/scale-out.md is left out (a
local cluster takes most of a minute to start; tests/maxvol_kit/
test_distributed.py runs the same calls).
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [
    "README.md",
    *sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("docs/*.md")),
]
SLOW = {("docs/scale-out.md", 0)}


def _programs(page):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(), re.S)
    return [
        (k, b)
        for k, b in enumerate(blocks)
        if b.startswith(("import", "from")) and (page, k) not in SLOW
    ]


@pytest.mark.parametrize("page", [p for p in PAGES if _programs(p)])
def test_the_page_runs_as_written(page, tmp_path, monkeypatch, capsys):
    for name in ("torch", "sklearn", "lightning", "matplotlib"):
        pytest.importorskip(name)
    import torch

    monkeypatch.chdir(tmp_path)  # anything a page writes stays in tmp_path
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for k, block in _programs(page):
            exec(compile(block, f"{page}:block {k}", "exec"), {"__name__": "__docs__"})
    finally:
        torch.set_num_threads(threads)
    if page == "docs/graft.md":
        out = capsys.readouterr().out
        assert re.search(r"0\.\d\d of the samples got a backward pass", out), out
        assert "the record holds" in out


def test_the_graft_docstring_examples_run():
    import doctest

    pytest.importorskip("torch")
    import graft.loop._graft

    result = doctest.testmod(graft.loop._graft, optionflags=doctest.ELLIPSIS)
    assert result.attempted and not result.failed
