"""Write a benchmark's table into docs/benchmarks.md between its markers."""

from __future__ import annotations

from pathlib import Path


def update_page(page: Path, name: str, table: str) -> bool:
    """Replace the text between ``<!-- NAME ...`` and ``<!-- /NAME -->``.

    Returns whether the page had the markers (the page is left alone if not).
    """
    begin, end = f"<!-- {name}", f"<!-- /{name} -->"
    if not page.exists():
        return False
    text = page.read_text()
    if begin not in text or end not in text:
        return False
    head, rest = text.split(begin, 1)
    marker_line, _ = rest.split("\n", 1)
    _, tail = rest.split(end, 1)
    page.write_text(f"{head}{begin}{marker_line}\n{table}{end}{tail}")
    return True
