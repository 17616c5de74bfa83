"""`digitpipe push` and `digitpipe pull` (what `make push` and `make pull` run): data, outputs and
the run-cache to and from a DVC remote, which DVC_REMOTE may name for one command only."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from digitpipe.core.errors import DigitpipeError

if TYPE_CHECKING:
    from dvc.repo import Repo

# A remote given by URL lives only in memory: DVC's own Repo(config=...) lays it over every
# config level and writes nothing. `dvc remote add --local --force` (what make push ran before)
# wrote .dvc/config.local, so a failed push left a broken default remote behind for every later
# dvc command and queued experiment, and --force dropped options such as endpointurl. Pointing
# DVC_SYSTEM_CONFIG_DIR at a temporary folder would write no project file either, but needs a
# copy of the real system config in it and still one `dvc` process per step.
ONE_OFF = "dvc_remote"  # DVC lowercases remote names

FIXES = (
    "check the URL, the credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, an ssh key) "
    "and that the server answers; `make install` installs the s3 and ssh plugins"
)


@dataclass(frozen=True)
class Remote:
    """A DVC remote by its configured name, or ONE_OFF for a URL given for this command."""

    name: str
    url: str


def _same_url(first: str, second: str) -> bool:
    return first.rstrip("/") == second.rstrip("/")


def _url(given: str) -> str:
    """A URL as given, a local folder made absolute (DVC resolves a relative one from the config
    file's folder, not from here)."""
    return given if "://" in given else os.path.abspath(given)


def resolve(remotes: dict[str, dict], default: str | None, wanted: str | None) -> Remote:
    """The remote that ``wanted`` names: a configured remote's name, or a URL (the configured
    remote with that URL, so its options such as endpointurl or keyfile apply, else a one-off
    remote); no ``wanted``: the default remote."""
    if not wanted:
        if not default:
            raise DigitpipeError(
                "no DVC remote: give one for this command (make push DVC_REMOTE=s3://bucket/path) "
                "or configure a default (dvc remote add -d NAME URL)."
            )
        wanted = default
    if wanted.lower() in remotes:
        return Remote(wanted.lower(), remotes[wanted.lower()]["url"])
    url = _url(wanted)
    for name, options in remotes.items():
        if _same_url(options.get("url", ""), url):
            return Remote(name, url)
    return Remote(ONE_OFF, url)


@contextmanager
def opened(wanted: str | None) -> Iterator[tuple[Repo, Remote]]:
    """The DVC repo of the current folder, with ``wanted`` (see :func:`resolve`) resolved."""
    from dvc.config import Config
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        config = Config.from_cwd()
        remote = resolve(config["remote"], config["core"].get("remote"), wanted)
        extra = {"remote": {ONE_OFF: {"url": remote.url}}} if remote.name == ONE_OFF else None
        with Repo(config=extra) as repo:
            yield repo, remote
    except DvcException as exc:
        raise DigitpipeError(f"{exc}.") from exc


def holds_anything(repo: Repo, remote: Remote) -> bool:
    """Whether the remote holds any file; raises a DigitpipeError saying why when it cannot be
    used (a missing plugin, wrong credentials, no answer, no such bucket)."""
    try:
        storage = repo.cloud.get_remote(remote.name)
        fs, path = storage.fs, storage.path
        try:
            return bool(fs.ls(path))
        except FileNotFoundError:
            # Nothing there yet, unless the bucket (or the file system root) is missing too.
            container = fs.parts(path)[0]
            if not fs.exists(container):
                raise DigitpipeError(
                    f"the DVC remote {remote.url} lies in {container}, which does not exist; "
                    "create it or fix the URL."
                ) from None
            return False
    except DigitpipeError:
        raise
    except Exception as exc:  # each backend raises its own: botocore, asyncssh, OSError, DVC's
        cause = " ".join(str(exc).split()) or type(exc).__name__
        raise DigitpipeError(f"cannot use the DVC remote {remote.url}: {cause}; {FIXES}.") from exc


def push(wanted: str | None) -> str:
    """Push data, outputs and the run-cache; returns what was done."""
    from dvc.exceptions import DvcException
    from dvc.utils.humanize import get_summary

    with opened(wanted) as (repo, remote):
        holds_anything(repo, remote)  # one clear message before DVC's per-file ones
        try:
            count = repo.push(remote=remote.name, run_cache=True)
        except DvcException as exc:
            raise DigitpipeError(f"dvc push to {remote.url} failed: {exc} (see above).") from exc
    done = get_summary([("pushed", count)]) or "everything was there already"
    return f"{remote.url}: {done} (data, outputs and the run-cache)."


def pull(wanted: str | None) -> str:
    """Pull data, outputs and the run-cache; an empty remote (a first run) pulls nothing and is
    no error. Returns what was done."""
    from dvc.exceptions import DvcException
    from dvc.utils.humanize import get_summary

    with opened(wanted) as (repo, remote):
        if not holds_anything(repo, remote):
            return f"{remote.url}: empty, nothing to pull (make push fills it)."
        try:
            stats = repo.pull(remote=remote.name, run_cache=True)["stats"]
        except DvcException as exc:
            raise DigitpipeError(f"dvc pull from {remote.url} failed: {exc} (see above).") from exc
    return f"{remote.url}: {get_summary(stats.items()) or 'everything is up to date'}."
