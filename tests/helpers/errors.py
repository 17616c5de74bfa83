"""The check of the promise every command makes for bad input, bad params and faults: one
message saying what is wrong and how to fix it, exit status 2, never a traceback."""

from __future__ import annotations

PREFIX = "digitpipe: error: "  # what core/stage.py's fail() and stages/_entry.py print


def assert_user_error(outcome, *words: str, alone: bool = False) -> str:
    """Assert that ``outcome`` is a refusal kept to the promise: exit status 2, one message on
    stderr (one line starting ``digitpipe: error: ``, perhaps wrapped onto more), no traceback,
    and every one of ``words`` in stderr (case-insensitive). ``alone``: stderr holds nothing
    but digitpipe's own lines (its warnings, then the message): no library output, no Python
    warning. Returns stderr.

    ``outcome`` is a finished process (anything with ``returncode`` and ``stderr``: a
    ``subprocess.CompletedProcess``, a ``helpers.processes.Measured``) or an in-process call as
    ``(exit status, capsys)`` or ``(exit status, stderr)``."""
    if isinstance(outcome, tuple):
        status, captured = outcome
        err = captured if isinstance(captured, str) else captured.readouterr().err
    else:
        status, err = outcome.returncode, outcome.stderr
    assert status == 2, f"exit status {status}, not 2; stderr:\n{err}"
    lines = err.splitlines()
    starts = [line.startswith(PREFIX) for line in lines]
    assert starts.count(True) == 1, err
    assert "Traceback" not in err, err
    if alone:  # before the message, only digitpipe's own lines (its warnings)
        before = lines[: starts.index(True)]
        assert all(line.startswith("digitpipe: ") for line in before), err
        assert "Warning" not in err, err
    for word in words:
        assert word.lower() in err.lower(), f"{word!r} is not in stderr:\n{err}"
    return err
