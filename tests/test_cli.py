"""The `digitpipe` command line as a user meets it."""

from __future__ import annotations

import importlib.metadata
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.errors import assert_user_error

from digitpipe.cli import main

DIGITPIPE = str(Path(sys.executable).parent / "digitpipe")


def test_version_is_the_installed_distributions(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"digitpipe {importlib.metadata.version('digitpipe')}"


def test_a_reader_that_stops_reading_ends_the_command_quietly(tmp_path):
    matrix = tmp_path / "confusion.csv"
    matrix.write_text("actual,a,b\na,5,1\nb,2,7\n")
    command = subprocess.Popen(
        [DIGITPIPE, "stats", str(matrix)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    command.stdout.close()  # as `| head` does once it has what it wants
    errors = command.stderr.read().decode()
    assert command.wait(timeout=60) == 128 + signal.SIGPIPE
    assert errors == ""


def test_stats_refuses_a_fifo_unopened(tmp_path, capsys):
    fifo = tmp_path / "confusion.csv"
    os.mkfifo(fifo)
    # Opening it would wait for a writer forever.
    assert_user_error(
        (main(["stats", str(fifo)]), capsys), f"{fifo}: not a regular file (a FIFO (named pipe))"
    )


@pytest.mark.parametrize("wait", ["-1", "nan", "soon"])
def test_retrain_refuses_a_wait_that_is_not_seconds(wait, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # were it accepted, nothing here to retrain
    with pytest.raises(SystemExit) as exit_info:
        main(["retrain", "--wait", wait])
    assert exit_info.value.code == 2
    expected = f"argument --wait: expected a number of seconds, 0 or more, got '{wait}'"
    assert expected in capsys.readouterr().err
