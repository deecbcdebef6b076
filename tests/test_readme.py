"""README.rst's plugin guide quotes the example distribution: every quoted
block must still be what the example's files say, line for line, in order."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "tsnet-lineproto"


def literal_blocks(text: str) -> list[str]:
    """The ``::`` literal blocks of an rst text, dedented."""
    blocks = []
    for m in re.finditer(r"::\n\n((?:(?:    .*)?\n)+)", text):
        lines = [line[4:] for line in m.group(1).rstrip("\n").split("\n")]
        blocks.append("\n".join(lines))
    return blocks


def guide() -> str:
    text = (ROOT / "README.rst").read_text()
    start = text.index("\nWriting a plugin\n")
    return text[start:text.index("\nBenchmark\n", start)]


def in_order(quoted: list[str], source: list[str]) -> bool:
    it = iter(source)
    return all(any(q == s for s in it) for q in quoted)


QUOTES = {
    "class GraphitePlugin(ProtocolPlugin):": EXAMPLE / "src/tsnet_lineproto/graphite.py",
    "# examples/tsnet-lineproto/src/tsnet/plugins/lineproto.py":
        EXAMPLE / "src/tsnet/plugins/lineproto.py",
    "[tool.setuptools]": EXAMPLE / "pyproject.toml",
}


@pytest.mark.parametrize("first_line", sorted(QUOTES))
def test_quoted_blocks_match_the_example(first_line: str) -> None:
    [block] = [b for b in literal_blocks(guide()) if b.startswith(first_line)]
    quoted = [line.strip() for line in block.split("\n")
              if line.strip() and not line.startswith("# examples/")]
    source = [line.strip() for line in QUOTES[first_line].read_text().split("\n")]
    assert in_order(quoted, source), f"README's quote of {QUOTES[first_line].name} drifted"
