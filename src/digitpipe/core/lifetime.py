"""A stage process ends with the `dvc` that launched it, even through a shell wrapper; SIGTERM
and SIGHUP end it through its cleanups."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

PR_SET_PDEATHSIG = 1  # prctl(2) option: the signal this process gets when its parent dies

# Shells that run a stage's command: DVC runs it with `$SHELL -c` (or /bin/sh), and dash stays
# as the stage's parent instead of exec-ing it, so the parent's death says nothing about DVC's.
WRAPPER_SHELLS = frozenset({"sh", "dash", "bash", "zsh", "ksh", "fish"})
POLL_SECONDS = 0.5
DVC_STAGE_VARIABLE = "DVC_STAGE"  # set by DVC for every stage command it runs


class Process(NamedTuple):
    """What /proc/PID/stat says of a process that is still alive."""

    pid: int
    name: str
    parent: int
    started: str  # clock ticks after boot: a reused pid has another


def alive(pid: int) -> Process | None:
    """Process ``pid``, or None once it has ended (a zombie counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name, _, rest = stat.partition("(")[2].rpartition(")")
    state, parent, *fields = rest.split()
    return None if state in {"Z", "X"} else Process(pid, name, int(parent), fields[17])


def launcher() -> Process | None:
    """The nearest ancestor that is not a shell wrapper; None when that is init (or gone)."""
    pid = os.getppid()
    while pid > 1 and (process := alive(pid)) is not None:
        if process.name not in WRAPPER_SHELLS:
            return process
        pid = process.parent
    return None


def watch(process: Process) -> None:
    """Send this process SIGTERM once ``process`` has ended."""
    while (now := alive(process.pid)) is not None and now.started == process.started:
        time.sleep(POLL_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)


def exit_on(signum: int) -> None:
    """Turn ``signum`` into SystemExit, so cleanups run (temporary files, the MLflow run
    KILLED)."""
    signal.signal(signum, lambda received, frame: sys.exit(128 + received))


def die_with_launcher() -> None:
    """End this process when the `dvc repro` that launched it ends (Linux): a dvc killed with
    SIGKILL leaves no stage running on as an orphan beside the next run. The kernel ends it with
    its parent; a thread watches a launcher beyond a shell wrapper. Only under DVC (it sets
    DVC_STAGE for each stage command): a stage started by hand is an ordinary program, so
    `nohup python stages/train.py &` outlives its terminal.

    SIGTERM, and SIGHUP unless it is ignored (nohup), end the stage through its cleanups.
    """
    exit_on(signal.SIGTERM)
    if signal.getsignal(signal.SIGHUP) is signal.SIG_DFL:
        exit_on(signal.SIGHUP)
    if DVC_STAGE_VARIABLE not in os.environ or not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the parent died before prctl took effect
        sys.exit(128 + signal.SIGTERM)
    found = launcher()
    if found is not None and found.pid != os.getppid():
        threading.Thread(target=watch, args=(found,), name="launcher-watch", daemon=True).start()


# How long a stopped group gets to end through its cleanups (a stage marks its MLflow run KILLED,
# DVC releases its locks: seconds) before it is killed.
GROUP_GRACE_SECONDS = 60


def run_as_group(command: list[str], **popen: Any) -> int:
    """Run ``command`` in a process group of its own and return its exit status.

    SIGTERM or SIGINT to this process ends the whole group and waits for it before this process
    ends: a `dvc repro` left behind would run on as an orphan and hold DVC's locks against the
    next run. The group gets SIGINT, as from Ctrl-C: DVC unwinds and releases its locks, a stage
    ends through its cleanups (its MLflow run marked KILLED); whatever is left gets SIGKILL after
    GROUP_GRACE_SECONDS.
    """
    with not_ignored_by_children(signal.SIGINT):
        child = subprocess.Popen(command, start_new_session=True, **popen)
    previous = signal.signal(signal.SIGTERM, lambda received, frame: sys.exit(128 + received))
    try:
        return child.wait()
    except BaseException:  # SystemExit from SIGTERM, KeyboardInterrupt from SIGINT
        end_group(child)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def not_ignored_by_children(signum: int) -> Iterator[None]:
    """Programs started inside get ``signum``'s default action even where this process ignores
    it: exec keeps an ignored signal ignored, and a script's background job ignores SIGINT (so
    would its `dvc repro` group, which then lost the SIGINT that ends it and was killed 60 s
    later, its MLflow run left RUNNING). A handled signal is reset to its default by exec: a
    handler that does nothing keeps this process's behaviour meanwhile."""
    if signal.getsignal(signum) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signum, lambda received, frame: None)
    try:
        yield
    finally:
        signal.signal(signum, signal.SIG_IGN)


def end_group(
    leader: subprocess.Popen, signum: int = signal.SIGINT, grace_s: float = GROUP_GRACE_SECONDS
) -> None:
    """End the process group ``leader`` started with ``signum`` (SIGKILL after ``grace_s``) and
    wait for its leader to end."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader.pid, signum)
    with contextlib.suppress(subprocess.TimeoutExpired):
        leader.wait(grace_s)
    with contextlib.suppress(ProcessLookupError):  # stragglers beyond the leader, or the leader
        os.killpg(leader.pid, signal.SIGKILL)
    leader.wait()
