"""Every ```python block of README.md and docs/**/*.md runs, so the docs never rot.

Each block is one test (id ``path:line``), executed as a fresh module in a temporary
working directory; its tracebacks point at the Markdown file's own lines. As for a
deployed receiver, ``CARECYCLE_WEBHOOK_SECRET`` holds a fresh endpoint secret. Kinds:

- most blocks are executed as they are, and fail the test if they raise;
- a block whose first line is ``# <name>.py`` is a file of the reader's project: it runs
  as module ``<name>``, and the blocks after it on the same page can import it;
- a block whose first line is ``# test_<name>.py`` is a pytest module: it is written to
  that file and run by pytest (the package's pytest plugin loads from its entry point, as
  it does for users), and every test in it must pass. It runs in this process (pytester),
  unless its project sets Django up, which a process does once: then in a subprocess;
- a block made only of ``--8<-- "path"`` lines shows a real file of the repository
  (pymdownx.snippets includes it at build time): the file must exist and compile, and
  its own tests run it.

The blocks of ``docs/typing.md`` are also type-checked, in tests/test_typing_rejected.py
(one mypy run for them and tests/typing/rejected): mypy --strict must report an error on
exactly the lines marked ``# rejected by mypy [code]``, with that code, and the error
messages the page quotes must be mypy's.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import textwrap
import types
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from carecycle_webhooks.testing import generate_secret

pytest_plugins = ["pytester"]

if TYPE_CHECKING:
    from collections.abc import Iterator

with warnings.catch_warnings():
    # Starlette 1.x prefers httpx2 for its test client, and warns once, on import, when it
    # finds httpx (what the dev extra installs): import it here, not in the first block.
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette\.testclient` is deprecated")
    import starlette.testclient  # noqa: F401

ROOT = Path(__file__).parent.parent
SOURCES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
OPENING = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
SNIPPET = re.compile(r'^--8<-- "(?P<path>[^"]+)"$')
FILE_NAME = re.compile(r"^# (?P<name>\w+)\.py$")
# Fences whose language is Python in all but name would escape these tests.
UNTESTED_PYTHON = {"py", "py3", "python3", "pycon", "ipython", "pyi"}


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def file_name(self) -> str | None:
        """``app`` for a block that starts with ``# app.py``."""
        match = FILE_NAME.match(self.code.splitlines()[0])
        return match["name"] if match else None

    def padded(self) -> str:
        """The code, preceded by blank lines so that its line numbers are the file's."""
        return "\n" * self.line + self.code


def read_blocks(path: Path) -> list[Block]:
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    number = 0
    while number < len(lines):
        opening = OPENING.match(lines[number])
        number += 1
        if not opening:
            continue
        indent, fence = opening["indent"], opening["fence"]
        info = opening["info"].strip()
        language = info.split()[0].lstrip(".").lower() if info else ""
        start = number
        while number < len(lines) and not re.fullmatch(rf" *{re.escape(fence)}\s*", lines[number]):
            number += 1
        body = "\n".join(line.removeprefix(indent) for line in lines[start:number])
        blocks.append(Block(path, start, language, textwrap.dedent(body) + "\n"))
        number += 1  # the closing fence
    return blocks


ALL_BLOCKS = [block for path in SOURCES for block in read_blocks(path)]
PYTHON_BLOCKS = [block for block in ALL_BLOCKS if block.language == "python"]


def snippet_paths(block: Block) -> list[str] | None:
    """The files a block includes, when it is made only of snippet lines."""
    lines = [line for line in block.code.splitlines() if line.strip()]
    matches = [SNIPPET.match(line.strip()) for line in lines]
    if lines and all(matches):
        return [match["path"] for match in matches if match]
    return None


def test_sources_are_found() -> None:
    assert (ROOT / "README.md") in SOURCES
    assert len(SOURCES) > 10
    assert len(PYTHON_BLOCKS) > 20


def test_every_python_block_is_marked_python() -> None:
    untested = [block.name for block in ALL_BLOCKS if block.language in UNTESTED_PYTHON]
    assert not untested, f"use ```python (tested) or ```text: {untested}"


CODE_WIDTH = 88  # what a 1280-pixel window shows of a code block (docs/stylesheets/extra.css)


def test_python_blocks_fit_the_page() -> None:
    # Wider lines scroll sideways. The blocks' own code is formatted at this width
    # (docs/ruff.toml); comments, and the files that snippet lines include, are not.
    too_wide = []
    for block in PYTHON_BLOCKS:
        included = snippet_paths(block)
        if included is None:
            lines = block.code.splitlines()
        else:
            lines = [line for path in included for line in (ROOT / path).read_text().splitlines()]
        too_wide += [f"{block.name}: {line.strip()[:60]}" for line in lines if len(line) > CODE_WIDTH]
    assert not too_wide, "\n".join(too_wide)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary project directory: the working directory, importable, and the secret set."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CARECYCLE_WEBHOOK_SECRET", generate_secret())
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if (getattr(sys.modules[name], "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda block: block.name)
def test_python_block_runs(
    block: Block, project: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    if (included := snippet_paths(block)) is not None:
        for relative in included:
            source = ROOT / relative
            assert source.is_file(), f"{block.name} includes {relative}, which does not exist"
            compile(source.read_text(encoding="utf-8"), str(source), "exec")
        return
    # The files that the page's earlier blocks stand for.
    for earlier in PYTHON_BLOCKS:
        if earlier.path == block.path and earlier.line < block.line and earlier.file_name:
            (project / f"{earlier.file_name}.py").write_text(earlier.code, encoding="utf-8")
    name = block.file_name
    if name and name.startswith("test_"):
        run_pytest_module(block, project / f"{name}.py", monkeypatch, request)
        return
    # A module of its own, importable by name (Django's ROOT_URLCONF = __name__ needs that).
    name = name or "docs_block_" + re.sub(r"\W", "_", block.name)
    module = types.ModuleType(name)
    module.__file__ = str(block.path)
    monkeypatch.setitem(sys.modules, name, module)
    code = compile(block.padded(), str(block.path), "exec")
    exec(code, module.__dict__)  # noqa: S102 - running the docs' own code is the point


# What a project that sets Django up says; its settings can be configured once per process.
SETS_DJANGO_UP = re.compile(r"^\s*django\.setup\(\)", re.MULTILINE)
PYTEST_OPTIONS = ["-q", "-p", "no:cacheprovider"]


def run_pytest_module(
    block: Block, path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    path.write_text(block.code, encoding="utf-8")
    (path.parent / "pytest.ini").write_text("[pytest]\nfilterwarnings = error\n", encoding="utf-8")
    options = [*PYTEST_OPTIONS, "--rootdir", str(path.parent)]
    # Twice, in the same directory, as a reader runs their tests again: what a first run
    # leaves behind (a database file) must not fail the second.
    for run in ("first run", "second run"):
        if any(SETS_DJANGO_UP.search(file.read_text(encoding="utf-8")) for file in path.parent.glob("*.py")):
            output = run_pytest_in_a_subprocess(block, path, options)
        else:
            output = run_pytest_in_this_process(block, path, options, monkeypatch, request)
        assert re.search(r"\b\d+ passed\b", output), f"{run}:\n{output}"
        assert not re.search(r"\b(failed|skipped|xfailed|error)\b", output), f"{run}:\n{output}"


def run_pytest_in_this_process(
    block: Block,
    path: Path,
    options: list[str],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> str:
    """pytest run by pytester in this process: about a second quicker than a new one.

    The project's directory is the working directory and on ``sys.path``, as ``python -m
    pytest`` run there has it; pytester puts ``sys.modules`` and ``sys.path`` back after
    the run. pytest-django stays out: other tests of this process may have configured
    Django's settings, which it would then set up for the run; a fresh process has none.
    """
    pytester: pytest.Pytester = request.getfixturevalue("pytester")
    monkeypatch.chdir(path.parent)  # pytester went to a directory of its own
    result = pytester.runpytest_inprocess(*options, "-p", "no:django", path.name)
    output = "\n".join(result.outlines + result.errlines)
    assert result.ret == pytest.ExitCode.OK, f"{block.name}:\n{output}"
    return output


def run_pytest_in_a_subprocess(block: Block, path: Path, options: list[str]) -> str:
    """pytest in a new process, for a project that sets Django up (once per process).

    Hypothesis's plugin, which the project does not use, stays out: importing it takes
    about a second.
    """
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *options, "-p", "no:hypothesispytest", path.name],
        capture_output=True,
        text=True,
        cwd=path.parent,
        check=False,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{block.name}:\n{output}"
    return output
