"""Paths every stage uses, relative to the project root. Each stage's outputs are declared in
digitpipe.outputs, one module per stage."""

from __future__ import annotations

from pathlib import Path

PARAMS_FILE = Path("params.yaml")
