"""Type errors that mypy must report: the rejected half of tests/typing, and docs/typing.md.

One mypy run checks both (a cold run costs seconds: it reads the package's dependencies
too): each file of tests/typing/rejected must have an error on exactly its lines marked
``# E: <code>``; each ```python block of docs/typing.md, written as a module of its own,
on exactly its lines marked ``# rejected by mypy [code]``; and the error messages that
page quotes must be mypy's.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_docs import ROOT, Block, read_blocks

REJECTED = Path(__file__).parent / "typing" / "rejected"
REJECTED_FILES = sorted(REJECTED.glob("*.py"))
MARK = re.compile(r"#\s*E:\s*([a-z-]+)")
TYPING_PAGE = ROOT / "docs" / "typing.md"
PAGE_BLOCKS = read_blocks(TYPING_PAGE)
TYPED_BLOCKS = [block for block in PAGE_BLOCKS if block.language == "python"]
PAGE_MARK = re.compile(r"#\s*rejected by mypy \[(?P<code>[a-z-]+)\]")
ERROR = re.compile(r"(?P<path>[^:\s]+\.py):(?P<line>\d+): error: .*\[(?P<code>[a-z-]+)\]$")


@dataclasses.dataclass(frozen=True)
class MypyReport:
    """What one mypy run reported: its output, and its errors by file name."""

    output: str
    errors: dict[str, dict[int, set[str]]]

    def errors_of(self, name: str) -> dict[int, set[str]]:
        return self.errors.get(name, {})


def block_module(number: int) -> str:
    return f"typing_block_{number}.py"


@pytest.fixture(scope="module")
def mypy_report(tmp_path_factory: pytest.TempPathFactory) -> MypyReport:
    blocks = tmp_path_factory.mktemp("typing-page")
    for number, block in enumerate(TYPED_BLOCKS):
        # Padded: mypy's line numbers are the page's.
        (blocks / block_module(number)).write_text(block.padded(), encoding="utf-8")
    files = [*REJECTED_FILES, *sorted(blocks.glob("*.py"))]
    # A single run has no use for a cache, and writing it costs about as much as the checks.
    options = ["--strict", "--no-error-summary", "--show-error-codes", "--cache-dir", os.devnull]
    result = subprocess.run(
        [sys.executable, "-m", "mypy", *options, "--config-file", str(ROOT / "pyproject.toml")]
        + [str(path) for path in files],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    errors: dict[str, dict[int, set[str]]] = {}
    for line in result.stdout.splitlines():
        match = ERROR.fullmatch(line)
        if match:
            lines = errors.setdefault(Path(match["path"]).name, {})
            lines.setdefault(int(match["line"]), set()).add(match["code"])
        else:
            assert ": note: " in line, output
    # No error elsewhere (in the package, say) goes unchecked.
    assert set(errors) <= {path.name for path in files}, output
    return MypyReport(result.stdout, errors)


def expected_errors(path: Path) -> dict[int, str]:
    return {
        number: match.group(1)
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if (match := MARK.search(line))
    }


@pytest.mark.parametrize("path", REJECTED_FILES, ids=lambda p: p.name)
def test_mypy_rejects_exactly_the_marked_lines(path: Path, mypy_report: MypyReport) -> None:
    reported = mypy_report.errors_of(path.name)
    expected = expected_errors(path)
    assert expected, "no expectations in file"
    assert set(reported) == set(expected), mypy_report.output
    for number, code in expected.items():
        assert code in reported[number], f"line {number}: expected [{code}], got {reported[number]}"


def page_marks(block: Block) -> dict[int, set[str]]:
    """The lines of the page that the block marks as rejected, with their codes."""
    marks: dict[int, set[str]] = {}
    for offset, line in enumerate(block.code.splitlines(), start=1):
        if marker := PAGE_MARK.search(line):
            marks.setdefault(block.line + offset, set()).add(marker["code"])
    return marks


def test_the_typing_page_shows_rejected_lines() -> None:
    assert TYPED_BLOCKS
    assert any(page_marks(block) for block in TYPED_BLOCKS), "docs/typing.md shows no rejected line"


@pytest.mark.parametrize("number", range(len(TYPED_BLOCKS)), ids=lambda number: TYPED_BLOCKS[number].name)
def test_typing_page_block_is_what_mypy_says(number: int, mypy_report: MypyReport) -> None:
    assert mypy_report.errors_of(block_module(number)) == page_marks(TYPED_BLOCKS[number]), mypy_report.output


def test_the_messages_the_typing_page_quotes_are_mypy_s(mypy_report: MypyReport) -> None:
    quoted = [
        line
        for block in PAGE_BLOCKS
        if block.language == "text"
        for line in block.code.splitlines()
        if line.startswith("error: ")
    ]
    assert quoted
    for line in quoted:
        assert f": {line}" in mypy_report.output, line
