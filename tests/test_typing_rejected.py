"""Type errors that mypy must report: the rejected half of tests/typing."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REJECTED = Path(__file__).parent / "typing" / "rejected"
ROOT = Path(__file__).parent.parent
MARK = re.compile(r"#\s*E:\s*([a-z-]+)")


def expected_errors(path: Path) -> dict[int, str]:
    return {
        number: match.group(1)
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if (match := MARK.search(line))
    }


@pytest.fixture(scope="module")
def mypy_output(tmp_path_factory: pytest.TempPathFactory) -> str:
    cache = tmp_path_factory.mktemp("mypy-cache")
    options = ["--strict", "--no-error-summary", "--show-error-codes", "--cache-dir", str(cache)]
    result = subprocess.run(
        [sys.executable, "-m", "mypy", *options, "--config-file", str(ROOT / "pyproject.toml")]
        + [str(path) for path in sorted(REJECTED.glob("*.py"))],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    return result.stdout


@pytest.mark.parametrize("path", sorted(REJECTED.glob("*.py")), ids=lambda p: p.name)
def test_mypy_rejects_exactly_the_marked_lines(path: Path, mypy_output: str) -> None:
    reported: dict[int, set[str]] = {}
    for line in mypy_output.splitlines():
        match = re.match(rf"(?:.*/)?{re.escape(path.name)}:(\d+): error: .*\[([a-z-]+)\]$", line)
        if match:
            reported.setdefault(int(match.group(1)), set()).add(match.group(2))
    expected = expected_errors(path)
    assert expected, "no expectations in file"
    assert set(reported) == set(expected), mypy_output
    for number, code in expected.items():
        assert code in reported[number], f"line {number}: expected [{code}], got {reported[number]}"
