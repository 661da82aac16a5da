"""Every Python example in README.md and docs/ runs as written.

The fenced ``python`` blocks of one page run in order as one script, in a
fresh process and an empty folder, as a reader would paste them.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [
    p
    for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    if "```python" in p.read_text()
]


def blocks(page):
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.S | re.M)


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_page_examples_run(page, tmp_path):
    script = tmp_path / "example.py"
    script.write_text("\n\n".join(blocks(page)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"{page.name}:\n{done.stderr[-3000:]}"


def test_every_page_with_examples_is_collected():
    assert {p.name for p in PAGES} >= {"README.md", "quickstart.md", "graft.md"}
    assert all(blocks(p) for p in PAGES)
