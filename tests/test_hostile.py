"""Hostile files and params (issue 17): each fails fast with one message naming the file and the
fault, exit status 2, no traceback, nothing written, in bounded memory and time.

Bombs and special files run the CLI in a fresh process: a wrapper process runs it and reports
its peak RSS (``RUSAGE_CHILDREN`` of the wrapper counts that one child only) and wall time; a
hang fails the test at the wrapper's timeout instead of blocking the run.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers.errors import assert_user_error
from helpers.model import untrained_model
from helpers.processes import Measured, measured_digitpipe
from helpers.project import edit_params, run_cli
from PIL import Image

from digitpipe.cli import main
from digitpipe.dataset.idx import write_idx
from digitpipe.outputs.ingest import INGEST_REPORTS, PROCESSED_DIR

MAX_RSS_MB = 200  # the ingest process, all of it: a bomb may add only what its header declares
MAX_EXTRA_RSS_MB = 100  # predict (torch loaded first): above the same command on a missing file
CLEAN_EXIT_RUNS = 5  # the abort at exit came in about 1 run in 5
HANG_GUARD_S = 60  # a process still running then has hung; speed is measured in bench/hostile.py

# `digitpipe ARGS` in a fresh process under a folder, with its peak RSS.
digitpipe = functools.partial(measured_digitpipe, hang_guard_s=HANG_GUARD_S)


def assert_no_ingest_output(project: Path) -> None:
    assert not (project / PROCESSED_DIR).exists()
    assert not (project / INGEST_REPORTS).exists()
    assert not list((project / "data").glob(".processed*"))


# ---------------------------------------------------------------- gzip bombs


@functools.cache
def gigabyte_of_zeros() -> bytes:
    """A gzip member that inflates to 1 GiB of zero bytes (about 4.7 MB)."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: gzip framing
    chunk = bytes(2**20)
    return b"".join(compressor.compress(chunk) for _ in range(1024)) + compressor.flush()


def idx_header(code: int, *dims: int) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def gzip_bomb(path: Path, header: bytes) -> Path:
    """``header`` followed by 1 GiB of zeros, gzip-compressed (two members, one stream)."""
    path.write_bytes(gzip.compress(header, mtime=0) + gigabyte_of_zeros())
    return path


def test_gzip_bomb_stops_at_the_size_its_header_declares(tiny_project):
    gzip_bomb(tiny_project / "data/raw/train-images.gz", idx_header(0x08, 10000, 28, 28))
    run = digitpipe(tiny_project, "ingest")
    assert_user_error(
        run,
        "train-images.gz: file is longer than its header says",
        "header dims 10000x28x28 of 1-byte values need 7840000 data bytes, found more",
        alone=True,
    )
    assert run.rss_mb < MAX_RSS_MB, run
    assert_no_ingest_output(tiny_project)


def test_gzip_bomb_with_a_wrong_header_is_refused_at_its_first_bytes(tiny_project):
    gzip_bomb(tiny_project / "data/raw/train-images.gz", b"")  # all zeros: magic 0x00000000
    run = digitpipe(tiny_project, "ingest")
    assert_user_error(
        run, "train-images.gz: not an IDX file: wrong magic number 0x00000000", alone=True
    )
    assert run.rss_mb < MAX_RSS_MB, run
    assert_no_ingest_output(tiny_project)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """An untrained softmax model: predict checks its inputs before the network matters."""
    return untrained_model(tmp_path_factory.mktemp("model"))


def predict(folder: Path, model_dir: Path, *inputs: str | Path) -> Measured:
    """`digitpipe predict INPUTS --strict` in a fresh process, writing ``folder/out.csv``."""
    return digitpipe(
        folder, "predict", *inputs, "--model", model_dir, "--out", "out.csv", "--strict"
    )


@pytest.fixture(scope="module")
def predict_baseline(model_dir, tmp_path_factory) -> Measured:
    """Predict on a missing file: the RSS and time of loading torch and the model."""
    run = predict(tmp_path_factory.mktemp("baseline"), model_dir, "missing.png")
    assert_user_error(run, "no such file", alone=True)
    return run


def test_gzip_bomb_given_to_predict(tmp_path, model_dir, predict_baseline):
    gzip_bomb(tmp_path / "bomb.gz", idx_header(0x08, 10000, 28, 28))
    run = predict(tmp_path, model_dir, "bomb.gz")
    assert_user_error(run, "bomb.gz: file is longer than its header says", "found more", alone=True)
    assert run.rss_mb < predict_baseline.rss_mb + MAX_EXTRA_RSS_MB, (run, predict_baseline)
    assert not (tmp_path / "out.csv").exists()


# ---------------------------------------------------------------- special files


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_devices_and_fifos_are_refused_unopened(tiny_project, kind):
    if kind == "device":
        edit_params(tiny_project, "data", train={"images": "/dev/zero", "labels": "x"})
        words = ["/dev/zero: not a regular file (a character device)"]
    else:
        os.mkfifo(tiny_project / "data/raw/pipe")  # no writer: opening it would block forever
        edit_params(tiny_project, "data", train={"csv": "data/raw/pipe"})
        words = ["data/raw/pipe: not a regular file (a FIFO (named pipe))"]
    run = digitpipe(tiny_project, "ingest")
    assert_user_error(run, *words, "give the path of a regular file holding the data", alone=True)
    assert_no_ingest_output(tiny_project)


def test_predict_refuses_devices_and_fifos(tmp_path, model_dir):
    os.mkfifo(tmp_path / "pipe.png")
    run = digitpipe(tmp_path, "predict", "pipe.png", "/dev/zero", "--model", model_dir)
    assert_user_error(
        run,
        "skipped pipe.png: not a regular file (a FIFO (named pipe))",
        "skipped /dev/zero: not a regular file (a character device)",
        "nothing to predict",
        alone=True,
    )
    assert not (tmp_path / "predictions.csv").exists()


# ---------------------------------------------------------------- IDX and CSV files


def _raw_idx(name: str, payload: bytes):
    return lambda project: (project / "data/raw" / name).write_bytes(payload)


def _labels(values: np.ndarray):
    def write(project: Path) -> None:
        labels = read_labels(project).astype(values.dtype)
        labels[4] = values[0]
        write_idx(labels, project / "data/raw/test-labels")

    return write


def read_labels(project: Path) -> np.ndarray:
    from digitpipe.dataset.idx import read_idx

    return read_idx(project / "data/raw/test-labels").copy()


def _empty_pair(project: Path) -> None:
    write_idx(np.zeros((0, 28, 28), np.uint8), project / "data/raw/test-images")
    write_idx(np.zeros(0, np.uint8), project / "data/raw/test-labels")


def _csv(text: str | bytes):
    def write(project: Path) -> None:
        path = project / "data/raw/train.csv"
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        edit_params(project, "data", train={"csv": "data/raw/train.csv"})

    return write


PIXELS = ",".join(f"pixel{i}" for i in range(4))


def _pixel_rows(rows: int, pixels: int) -> str:
    """A labelled pixel CSV: labels 0..9 in turn, random pixels."""
    rng = np.random.default_rng(0)
    header = ",".join(["label", *(f"pixel{i}" for i in range(pixels))])
    body = (
        ",".join(map(str, [row % 10, *values]))
        for row, values in enumerate(rng.integers(0, 256, (rows, pixels)))
    )
    return "\n".join([header, *body]) + "\n"


def _short_row(text: str, line: int, values: int) -> str:
    """``text`` with line ``line`` (from 1) cut to its first ``values`` values."""
    lines = text.split("\n")
    lines[line - 1] = ",".join(lines[line - 1].split(",")[:values])
    return "\n".join(lines)


FILE_CASES = {
    "idx dims overflow int64 to 0": (
        _raw_idx("test-images", idx_header(0x08, 65536, 65536, 65536, 65536) + bytes(16)),
        [
            "test-images",
            "65536x65536x65536x65536",
            "declare 18446744073709551616 data bytes",
            "more than the 64 GiB",
        ],
    ),
    "idx dims absurdly large": (
        _raw_idx("test-images", idx_header(0x08, 4294967295, 28, 28) + bytes(784)),
        ["test-images", "4294967295x28x28", "more than the 64 GiB", "header is corrupt"],
    ),
    "idx with 255 dimensions": (
        _raw_idx("test-images", idx_header(0x08, *[1] * 255) + bytes(1)),
        ["test-images", "declares 255 dimensions; digitpipe reads 1 to 4"],
    ),
    "idx zero-image pair": (_empty_pair, ["test-images", "the file holds no images"]),
    "idx zero-pixel images": (
        lambda p: write_idx(np.zeros((200, 0, 28), np.uint8), p / "data/raw/test-images"),
        ["test-images", "the images are 0x28 pixels"],
    ),
    "idx float32 label 2.5": (
        _labels(np.array([2.5], np.float32)),
        ["test-labels", "label 2.5 at position 4 is not a whole number", "0..9"],
    ),
    "idx float32 label nan": (
        _labels(np.array([np.nan], np.float32)),
        ["test-labels", "label nan at position 4 is not a whole number"],
    ),
    "csv duplicate label column": (
        _csv(f"label,label,{PIXELS}\n1,2,3,4,5,6\n"),
        ["train.csv", "column 'label' appears twice in the header (columns 1 and 2)"],
    ),
    "csv latin-1 header": (
        _csv(f"label,{PIXELS},pix\xe9l\n1,2,3,4,5\n".encode("latin-1")),
        ["train.csv", "the header is not UTF-8 text (byte 0xe9 at position 37", "as UTF-8"],
    ),
    "csv label 1e20": (
        _csv(f"label,{PIXELS}\n1,2,3,4,5\n1e20,2,3,4,5\n"),
        ["train.csv", "label 1e+20 at position 1 is out of range"],
    ),
    "csv non-numeric cell": (
        _csv(f"label,{PIXELS}\n1,2,3,4,5\n1,2,3,4,5\n1,2,x,4,5\n"),
        ["train.csv", "column 'pixel1' is not numeric: value 'x' at data row 3"],
    ),
    "csv stray quote in a file over pyarrow's 1 MB block": (
        _csv(_pixel_rows(2000, 784).replace("\n3,", '\n"3,', 1)),
        ["train.csv", "line 5 has an unpaired double quote", "Remove the stray quote"],
    ),
    "csv row of 780 values in a file over pyarrow's 1 MB block": (
        _csv(_short_row(_pixel_rows(2000, 784), line=1500, values=780)),
        ["train.csv", "line 1500 has 780 values where the header has 785 columns"],
    ),
    "csv latin-1 cell in a row of the wrong length": (  # pyarrow could not show this row
        _csv(f"label,{PIXELS}\n1,2,3,4,5\n1,2,\xe9,4\n".encode("latin-1")),
        ["train.csv", "line 3 holds byte 0xe9, which is not ASCII"],
    ),
    "csv utf-16": (
        _csv(f"label,{PIXELS}\n1,2,3,4,5\n".encode("utf-16")),
        ["train.csv", "binary content (starts with 0xfffe6c00)", "UTF-8 text"],
    ),
}


@pytest.mark.parametrize("case", FILE_CASES)
def test_hostile_file_is_refused_clearly(case, tiny_project, monkeypatch, capsys):
    break_it, words = FILE_CASES[case]
    break_it(tiny_project)
    err = assert_user_error(
        (run_cli(tiny_project, monkeypatch, "ingest"), capsys), *words, alone=True
    )
    assert len(err) < 600, err
    assert_no_ingest_output(tiny_project)


def test_csv_with_a_header_over_1_mb_is_read(tiny_project, monkeypatch, capsys):
    side = 400  # a 400x400-pixel CSV: its header is 1.8 MB, more than pyarrow's 1 MB block
    rng = np.random.default_rng(0)
    path = tiny_project / "data/raw/train.csv"
    with path.open("w") as handle:
        handle.write(",".join(["label"] + [f"pixel{i}" for i in range(side * side)]) + "\n")
        for row in range(20):
            pixels = rng.integers(0, 256, side * side)
            handle.write(f"{row % 10}," + ",".join(map(str, pixels)) + "\n")
    assert len(path.read_text().split("\n", 1)[0]) > 2**20
    edit_params(
        tiny_project,
        "data",
        train={"csv": "data/raw/train.csv"},
        test=None,
        test_fraction=0.5,
        val_fraction=0.25,
    )
    assert run_cli(tiny_project, monkeypatch, "ingest") == 0, capsys.readouterr().err
    table = pq.read_table(tiny_project / PROCESSED_DIR / "train.parquet")
    assert json.loads(table.schema.metadata[b"digitpipe"])["height"] == side


def test_blank_lines_and_a_stray_quote_are_located_in_bounded_memory(tiny_project):
    """Checking the row count and finding the quote once split the file into a list of lines:
    8 bytes a line, 240 MB for these 30 MB of blank lines."""
    header, body = _pixel_rows(20, 4).split("\n", 1)
    text = header + "\n" * 30_000_000 + body.replace("\n3,", '\n"3,', 1)
    _csv(text)(tiny_project)
    run = digitpipe(tiny_project, "ingest")
    line = text[: text.index('"')].count("\n") + 1
    assert_user_error(run, f"line {line} has an unpaired double quote", alone=True)
    assert run.rss_mb < MAX_RSS_MB, run


def test_csv_with_cr_line_ends_names_the_line_of_a_bad_byte(tiny_project, monkeypatch, capsys):
    _csv(f"label,{PIXELS}\r1,2,3,4,5\r1,2,\xe9,4,5\r".encode("latin-1"))(tiny_project)
    assert_user_error(
        (run_cli(tiny_project, monkeypatch, "ingest"), capsys),
        "train.csv: line 3 holds byte 0xe9, which is not ASCII",
        alone=True,
    )


def test_predict_exits_cleanly_after_refusing_a_csv(tmp_path, model_dir):
    """Exit status 2 and the one message, every time: pyarrow's threaded CSV reader let a pool
    thread outlive read_csv, and the interpreter's exit aborted it (exit 134, 1 run in 5)."""
    (tmp_path / "nohdr.csv").write_text(_pixel_rows(20, 784).split("\n", 1)[1])
    for _ in range(CLEAN_EXIT_RUNS):
        run = digitpipe(tmp_path, "predict", "nohdr.csv", "--model", model_dir)
        assert_user_error(
            run,
            "skipped nohdr.csv: the first row holds numbers, not column names",
            "label,pixel0,...,pixel783 when the first column holds the labels",
            "nothing to predict",
            alone=True,
        )


# ---------------------------------------------------------------- params.yaml


def test_params_over_1_mib_are_refused_unread(tiny_project, monkeypatch, capsys):
    with (tiny_project / "params.yaml").open("a") as handle:
        handle.write("# padding\n" * 120_000)
    assert_user_error(
        (run_cli(tiny_project, monkeypatch, "ingest"), capsys),
        "params.yaml: larger than 1 MiB",
        alone=True,
    )


def test_yaml_alias_bomb_is_refused_at_once(tiny_project):
    levels = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level, previous in zip("bcdefghi", "abcdefgh", strict=True):
        levels.append(f"{level}: &{level} [" + ", ".join([f"*{previous}"] * 9) + "]")
    path = tiny_project / "params.yaml"
    path.write_text("\n".join(levels) + "\n" + path.read_text())  # 9**9 strings once expanded
    run = digitpipe(tiny_project, "ingest")  # in a process of its own: unguarded, it takes GBs
    assert run.rss_mb < MAX_RSS_MB, run
    assert_user_error(
        run, "params.yaml: YAML aliases (*name) expand the file to more than 100,000", alone=True
    )


def test_deeply_nested_yaml_is_refused(tiny_project, monkeypatch, capsys):
    (tiny_project / "params.yaml").write_text("data: " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert_user_error(
        (run_cli(tiny_project, monkeypatch, "ingest"), capsys),
        "params.yaml: YAML nested more than 32 levels deep",
        alone=True,
    )


def test_a_key_given_twice_is_refused_with_both_lines(tiny_project, monkeypatch, capsys):
    path = tiny_project / "params.yaml"
    text = path.read_text()
    path.write_text(text.replace("data:\n", "data:\n  val_fraction: 0.2\n", 1))
    lines = path.read_text().splitlines()
    first = lines.index("  val_fraction: 0.2") + 1
    second = next(n for n, line in enumerate(lines, 1) if line.startswith("  val_fraction: 0.1"))
    assert_user_error(
        (run_cli(tiny_project, monkeypatch, "ingest"), capsys),
        f"params.yaml: key 'val_fraction' appears twice in one section (lines {first} and "
        f"{second})",
        alone=True,
    )


def test_params_that_are_not_utf8_are_refused(tiny_project, monkeypatch, capsys):
    path = tiny_project / "params.yaml"
    path.write_bytes(
        path.read_bytes() + "report:\n  title: Ziffernerkl\xe4rung\n".encode("latin-1")
    )
    assert_user_error(
        (run_cli(tiny_project, monkeypatch, "ingest"), capsys),
        "params.yaml: not UTF-8 text (byte 0xe4 on line",
        "save the file as UTF-8",
        alone=True,
    )


def test_validation_errors_quote_short_excerpts(tiny_project, monkeypatch, capsys):
    edit_params(tiny_project, "train", accelerator="x" * 100_000)
    edit_params(tiny_project, "activations", image_ids=[[i] for i in range(1000)])
    err = assert_user_error(
        (run_cli(tiny_project, monkeypatch, "ingest"), capsys),
        "train.accelerator",
        "activations.image_ids.0",
        "... and ",
        alone=True,
    )
    assert max(len(line) for line in err.splitlines()) < 400 and len(err) < 4000, err


@pytest.mark.parametrize("section", ["data", "train"])
def test_negative_seeds_are_refused_by_name(section, tiny_project, monkeypatch, capsys):
    edit_params(tiny_project, section, seed=-1)
    assert_user_error(
        (run_cli(tiny_project, monkeypatch, "ingest"), capsys),
        f"{section}.seed: Input should be greater than or equal to 0 (got -1)",
        alone=True,
    )
    assert_no_ingest_output(tiny_project)


# ---------------------------------------------------------------- pictures


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG declaring ``width`` x ``height`` 8-bit gray pixels, with almost no data: what
    decodes it fully fails late, after allocating the whole picture."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(bytes(width + 1))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


@pytest.mark.parametrize("side", [13000, 14000])  # 14000^2: above Pillow's own error limit
def test_huge_picture_is_refused_before_decoding(tmp_path, model_dir, predict_baseline, side):
    png_header_only(tmp_path / "huge.png", side, side)
    run = predict(tmp_path, model_dir, "huge.png")
    assert_user_error(
        run,
        f"huge.png: the picture is {side}x{side} pixels, more than the 16,777,216 (4096x4096)",
        "scale it down",
        alone=True,
    )
    assert "DecompressionBomb" not in run.stderr and "178956970" not in run.stderr
    assert run.rss_mb < predict_baseline.rss_mb + MAX_EXTRA_RSS_MB, (run, predict_baseline)
    assert not (tmp_path / "out.csv").exists()


def test_large_jpeg_is_decoded_at_a_reduced_scale(tmp_path, model_dir, mnist_train, capsys):
    digit = Image.fromarray(255 - mnist_train[0][0]).resize((5000, 5000))  # 25 Mpx, dark ink
    digit.save(tmp_path / "large.jpg", quality=80)
    status = main(
        [
            "predict",
            str(tmp_path / "large.jpg"),
            "--model",
            str(model_dir),
            "--out",
            str(tmp_path / "out.csv"),
            "--strict",
        ]
    )
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "predicted 1 image -> " in captured.out and "Warning" not in captured.err
