"""The bad-input tables' shared parts: run a `ddpm-hf` command in this process and check how it refuses.

A refusal is checked three ways: the exit status (1 for a refused input, 2 for a usage error), one line on stderr
that matches the row's message and holds no traceback, and a folder whose files are byte for byte what they were.

    ROWS = [Refusal("negative steps", ["sample", "{pipeline}", "--num-samples", "-1"], "num-samples", 2), ...]

    @pytest.mark.parametrize("row", ROWS, ids=lambda row: row.name)
    def test_bad_input_is_refused(row, tmp_path, capsys):
        assert_refused(row, capsys, watched=tmp_path, pipeline=...)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from ddpm_hf.cli import main as ddpm_hf


@dataclass(frozen=True)
class Refusal:
    """One row of a bad-input table: the command line (its `{name}` fields filled by `assert_refused`'s keywords),
    a regular expression the one-line message must match, and the exit status."""

    name: str
    argv: list[str]
    message: str
    status: int = 1


def tree_digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under `folder` by relative path (folders included, as empty strings)."""
    if not folder.exists():
        return {}
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        for path in sorted(folder.rglob("*"))
    }


def run_cli(argv: list[str]) -> int:
    """Exit status of `ddpm-hf argv…` run in this process (argparse's usage errors exit with 2)."""
    try:
        return ddpm_hf(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)


def assert_refused(
    row: Refusal,
    capsys: pytest.CaptureFixture[str],
    watched: Path,
    setup: Callable[[], None] | None = None,
    **fields: str,
) -> str:
    """Run `row` and check its status, its one-line message and that nothing under `watched` changed; return the
    message."""
    if setup is not None:
        setup()
    before = tree_digest(watched)
    capsys.readouterr()
    status = run_cli([argument.format(**fields) for argument in row.argv])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert status == row.status, f"exit status {status}, expected {row.status}; stderr:\n{err}"
    assert "Traceback" not in err, err
    assert len(errors) == 1, f"expected one error line, got:\n{err}"
    assert re.search(row.message, errors[0]), f"{errors[0]!r} does not match {row.message!r}"
    assert tree_digest(watched) == before, "the command changed files it refused to work on"
    return errors[0]
