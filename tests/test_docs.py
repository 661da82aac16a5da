"""The training-loop pages' examples run as written.

The ``python`` blocks of a page run in order in one namespace: all of
docs/graft.md (later blocks continue the first), the complete programs (those
that start with an import) of the other pages.
"""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _blocks(page):
    return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.S)


@pytest.mark.parametrize(
    ("page", "needs"),
    [
        ("graft.md", ["torch", "sklearn"]),
        ("lightning.md", ["torch", "sklearn", "lightning"]),
        ("quickstart.md", ["torch", "sklearn"]),
    ],
)
def test_the_page_runs_as_written(page, needs, tmp_path, monkeypatch, capsys):
    for name in needs:
        pytest.importorskip(name)
    torch = pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)  # anything a page writes stays in tmp_path
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    namespace = {"__name__": "__docs__"}
    blocks = _blocks(page)
    if page != "graft.md":  # the other pages' fragments are not programs
        blocks = [b for b in blocks if b.startswith(("import", "from"))]
    try:
        for block in blocks:
            exec(compile(block, f"{page}", "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
    assert blocks
    if page == "graft.md":
        out = capsys.readouterr().out
        assert re.search(r"0\.\d\d of the samples got a backward pass", out), out
        assert "the record holds" in out


def test_the_graft_docstring_examples_run():
    import doctest

    pytest.importorskip("torch")
    import graft._wrapper

    result = doctest.testmod(graft._wrapper, optionflags=doctest.ELLIPSIS)
    assert result.attempted and not result.failed
