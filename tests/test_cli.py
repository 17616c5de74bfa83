"""The `digitpipe` command line as a user meets it."""

from __future__ import annotations

import importlib.metadata

import pytest

from digitpipe.cli import main


def test_version_is_the_installed_distributions(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"digitpipe {importlib.metadata.version('digitpipe')}"
