"""Benchmark: how fast hostile input is refused (the bounds issue 17 sets: a gzip bomb of a few
MB in under 5 s, a YAML alias bomb in under 1 s). tests/test_hostile.py checks the behaviour
and the memory bound; this prints the times and records them (bench/results/hostile.json).
Run: `.venv/bin/python bench/hostile.py`.
"""

from __future__ import annotations

import contextlib
import gzip
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import yaml
from record import Row, record

from digitpipe.core.config import load_params
from digitpipe.core.errors import DigitpipeError

GZIP_TARGET_S, ALIAS_TARGET_S = 5.0, 1.0


def gzip_bomb(path: Path) -> None:
    """A valid IDX header for 10000 28x28 images, then 1 GiB of zeros, gzip-compressed."""
    header = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (10000, 28, 28))
    squeeze = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    body = b"".join(squeeze.compress(chunk) for _ in range(1024)) + squeeze.flush()
    path.write_bytes(gzip.compress(header, mtime=0) + body)


def alias_bomb(path: Path) -> None:
    """params.yaml preceded by nine levels of nine aliases (9**9 strings once expanded)."""
    levels = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level, previous in zip("bcdefghi", "abcdefgh", strict=True):
        levels.append(f"{level}: &{level} [" + ", ".join([f"*{previous}"] * 9) + "]")
    path.write_text("\n".join(levels) + "\n" + path.read_text())


def main() -> int:
    with tempfile.TemporaryDirectory() as scratch:
        project = Path(scratch)
        (project / "data").mkdir()
        gzip_bomb(project / "data" / "images.gz")
        params = {"data": {"train": {"images": "data/images.gz"}, "test_fraction": 0.1}}
        (project / "params.yaml").write_text(yaml.safe_dump(params))
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "digitpipe.cli", "ingest"], cwd=project, capture_output=True
        )
        gzip_s = time.perf_counter() - started
        assert done.returncode == 2, done.stderr
        size_mb = (project / "data" / "images.gz").stat().st_size / 1e6
        alias_bomb(project / "params.yaml")
        started = time.perf_counter()
        with contextlib.suppress(DigitpipeError):
            load_params(project / "params.yaml")
        alias_s = time.perf_counter() - started
    gzip_what = f"gzip bomb ({size_mb:.1f} MB, 1 GiB inflated) refused by `digitpipe ingest`"
    alias_what = "YAML alias bomb (9**9 values) refused"
    print(f"{gzip_what}: {gzip_s:.2f} s, start-up included (target < {GZIP_TARGET_S:.0f} s)")
    print(f"{alias_what}: {alias_s:.3f} s (target < {ALIAS_TARGET_S} s)")
    record(
        "hostile",
        [
            Row(
                what=f"{gzip_what}, start-up included",
                value=round(gzip_s, 2),
                unit="s",
                target=f"< {GZIP_TARGET_S:.0f} s",
                met=gzip_s < GZIP_TARGET_S,
                command="bench/hostile.py",
            ),
            Row(
                what=alias_what,
                value=round(alias_s, 3),
                unit="s",
                target=f"< {ALIAS_TARGET_S:.0f} s",
                met=alias_s < ALIAS_TARGET_S,
                command="bench/hostile.py",
            ),
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
