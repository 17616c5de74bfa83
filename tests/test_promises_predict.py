"""README promises of `digitpipe predict`: every picture format and upper-case suffixes, an IDX
whose image size does not fit the model, a folder with no pictures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import QUICK_TRAIN, trained_model
from PIL import Image

from digitpipe.cli import main
from digitpipe.dataset.idx import write_idx

DIGITS = 6  # test digits written in every format


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, mnist_train):
    """A bncnn trained for a few batches on 600 MNIST digits (these tests need a model, not a
    good one)."""
    images, labels = mnist_train
    project = tmp_path_factory.mktemp("predict-model")
    return trained_model(project, images[:600], labels[:600], {"test_fraction": 0.1}, QUICK_TRAIN)


def predict(inputs, model_dir, out, *extra) -> int:
    return main(
        ["predict", *map(str, inputs), "--model", str(model_dir), "--out", str(out), *extra]
    )


def dark_on_light(image: np.ndarray) -> Image.Image:
    """An MNIST digit as a user's picture: dark ink on white, 3x larger."""
    return Image.fromarray(255 - image).resize((84, 84), Image.Resampling.BILINEAR)


SUFFIXES = [".bmp", ".BMP", ".gif", ".GIF", ".jpg", ".JPG", ".jpeg", ".JPEG", ".PNG"]


def classes(top3: str) -> list[str]:
    """The classes of a top3 cell (``7:0.981 1:0.012 9:0.003``), best first."""
    return [item.split(":")[0] for item in top3.split()]


def by_name(path) -> pd.DataFrame:
    """A predictions CSV indexed by file name."""
    frame = pd.read_csv(path)
    return frame.set_index(frame["id"].map(lambda source: Path(source).name))


def test_every_picture_format_and_upper_case_suffix(tmp_path, model_dir, mnist_train, capsys):
    """Each file gives the answer of a PNG of the pixels it holds (decoded here by Pillow)."""
    folder, references = tmp_path / "formats" / "nested", tmp_path / "png"
    folder.mkdir(parents=True)
    references.mkdir()
    for i in range(DIGITS):
        picture = dark_on_light(mnist_train[0][1000 + i])
        for suffix in SUFFIXES:
            path = folder / f"{i}{suffix}"
            picture.save(path, **({"quality": 90} if "jp" in suffix.lower() else {}))
            with Image.open(path) as saved:
                pixels = np.asarray(saved.convert("L"))
            if suffix.lower() not in (".jpg", ".jpeg"):  # lossless formats
                np.testing.assert_array_equal(pixels, np.asarray(picture))
            Image.fromarray(pixels).save(references / f"{path.name}.png")
    assert predict([tmp_path / "formats"], model_dir, tmp_path / "formats.csv") == 0
    assert predict([references], model_dir, tmp_path / "png.csv") == 0
    assert "skipped" not in capsys.readouterr().err
    frame, expected = by_name(tmp_path / "formats.csv"), by_name(tmp_path / "png.csv")
    assert set(frame.index) == {f"{i}{suffix}" for i in range(DIGITS) for suffix in SUFFIXES}
    for name, row in frame.iterrows():
        reference = expected.loc[f"{name}.png"]
        assert row["predicted"] == reference["predicted"], name
        assert classes(row["top3"]) == classes(reference["top3"]), name
        assert row["probability"] == pytest.approx(reference["probability"], abs=1e-6), name
    # An upper-case suffix given as a file argument, not found by a folder search.
    assert predict([folder / "3.JPEG"], model_dir, tmp_path / "one.csv") == 0
    one = by_name(tmp_path / "one.csv")
    assert one.index.tolist() == ["3.JPEG"] and one["id"].iloc[0] == str(folder / "3.JPEG")
    assert one["probability"].iloc[0] == pytest.approx(frame.loc["3.JPEG", "probability"], abs=1e-6)


@pytest.mark.parametrize("shape", [(10, 20, 20), (10, 400)], ids=["NxHxW", "flat"])
def test_idx_of_another_image_size_is_refused(tmp_path, model_dir, mnist_train, capsys, shape):
    small = mnist_train[0][:10, 4:24, 4:24].reshape(shape)
    write_idx(small, tmp_path / "small-images.idx3")
    assert predict([tmp_path / "small-images.idx3"], model_dir, tmp_path / "out.csv") == 2
    message = capsys.readouterr().err
    assert message.startswith(f"digitpipe: error: {tmp_path / 'small-images.idx3'}: ")
    assert "images are 20x20" in message and "model takes 28x28" in message
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("strict", [False, True], ids=["default", "strict"])
def test_folder_with_no_pictures_is_reported(tmp_path, model_dir, mnist_train, capsys, strict):
    folder = tmp_path / "notes"
    (folder / "deeper").mkdir(parents=True)
    (folder / "readme.txt").write_text("no digits here\n")
    (folder / "deeper" / "pixels.csv").write_text("pixel0\n0\n")  # folders hold pictures only
    write_idx(mnist_train[0][:3], folder / "deeper" / "images.idx")
    assert predict([folder], model_dir, tmp_path / "out.csv", *["--strict"] * strict) == 2
    message = capsys.readouterr().err
    suffixes = ".png, .jpg, .jpeg, .bmp, .gif, .tif, .tiff, .webp"
    assert f"{folder}: no pictures ({suffixes}) in this folder." in message
    if not strict:
        assert message.splitlines()[-1] == (
            "digitpipe: error: nothing to predict: no input could be read."
        )
    assert not (tmp_path / "out.csv").exists()
    # The same folder beside a readable picture: reported, skipped, the picture predicted.
    Image.fromarray(mnist_train[0][0]).save(tmp_path / "digit.png")
    if not strict:
        assert predict([folder, tmp_path / "digit.png"], model_dir, tmp_path / "out.csv") == 0
        assert pd.read_csv(tmp_path / "out.csv")["id"].tolist() == [str(tmp_path / "digit.png")]
        assert f"skipped {folder}: no pictures" in capsys.readouterr().err
