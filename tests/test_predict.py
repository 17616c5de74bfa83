"""`digitpipe predict` with a bncnn trained briefly on real MNIST digits: pictures, CSV, IDX."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers.data import MNIST, default_params, mnist_data, write_csv
from helpers.errors import assert_user_error
from helpers.project import trained_model
from PIL import Image

from digitpipe.cli import main
from digitpipe.core.errors import DigitpipeError
from digitpipe.dataset.idx import read_idx, write_idx
from digitpipe.predict.images import load_digit
from digitpipe.predict.output import write_submission
from digitpipe.predict.predictor import Predictor

TRAIN_IMAGES = 3000
PICTURES = 1000  # MNIST test images written as PNG for the accuracy parity test


@pytest.fixture(scope="module")
def mnist_test() -> tuple[np.ndarray, np.ndarray]:
    return (
        read_idx(MNIST / "t10k-images-idx3-ubyte.gz"),
        read_idx(MNIST / "t10k-labels-idx1-ubyte.gz"),
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, mnist_train):
    """A bncnn trained for 2 epochs on 3000 MNIST training digits by the train stage."""
    images, labels = mnist_train
    return trained_model(
        tmp_path_factory.mktemp("project"),
        images[:TRAIN_IMAGES],
        labels[:TRAIN_IMAGES],
        {"test": None, "test_fraction": 0.05},
        {"max_epochs": 2},
    )


@pytest.fixture(scope="module")
def tensor_predictions(model_dir, mnist_test) -> np.ndarray:
    """The model's predicted classes for the first PICTURES test images, straight from arrays."""
    return Predictor.from_dir(model_dir).probabilities(mnist_test[0][:PICTURES]).argmax(axis=1)


def predict(inputs, model_dir, out, submission=None, strict=False) -> int:
    """`digitpipe predict` as a user types it."""
    argv = ["predict", *map(str, inputs), "--model", str(model_dir), "--out", str(out)]
    argv += ["--submission", str(submission)] if submission else []
    return main([*argv, "--strict"] if strict else argv)


def test_pictures_are_predicted_as_accurately_as_the_tensor_path(
    tmp_path, model_dir, mnist_test, tensor_predictions, capsys
):
    images, labels = mnist_test[0][:PICTURES], mnist_test[1][:PICTURES]
    for i, image in enumerate(images):
        folder = tmp_path / "digits" / str(i % 3)  # nested: folders are read recursively
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:04d}.png")
    assert predict([tmp_path / "digits"], model_dir, tmp_path / "out.csv") == 0
    assert f"predicted {PICTURES:,} images -> {tmp_path / 'out.csv'}" in capsys.readouterr().out
    frame = pd.read_csv(tmp_path / "out.csv")
    assert list(frame.columns) == ["source", "id", "predicted", "probability", "top3"]
    index = frame["id"].str.extract(r"(\d+)\.png$")[0].astype(int).to_numpy()
    assert sorted(index) == list(range(PICTURES))
    tensor_accuracy = np.mean(tensor_predictions == labels)
    picture_accuracy = np.mean(frame["predicted"].to_numpy() == labels[index])
    assert tensor_accuracy > 0.9, "the fixture model should be usable"
    assert abs(picture_accuracy - tensor_accuracy) <= 0.005
    assert np.mean(frame["predicted"].to_numpy() == tensor_predictions[index]) > 0.98


def light_offcentre_rgb(image: np.ndarray) -> Image.Image:
    """A 28x28 MNIST digit as dark blue ink on cream paper, 3x larger, off-centre in 140x100."""
    ink = np.asarray(Image.fromarray(image).resize((84, 84), Image.Resampling.BILINEAR)) / 255
    paper, pen = np.array([240, 235, 220]), np.array([20, 30, 110])
    canvas = np.tile(paper, (100, 140, 1)).astype(float)
    canvas[4:88, 50:134] = paper + ink[..., None] * (pen - paper)
    return Image.fromarray(canvas.round().astype(np.uint8))


def test_light_background_larger_offcentre_colour_digits_are_read(
    tmp_path, model_dir, mnist_test, tensor_predictions
):
    images, labels = mnist_test
    right = np.flatnonzero(tensor_predictions == labels[:PICTURES])[:30]
    paths = []
    for i in right:
        paths.append(tmp_path / f"{i}.{'jpg' if i % 2 else 'png'}")
        light_offcentre_rgb(images[i]).save(paths[-1])
    assert predict(paths, model_dir, tmp_path / "out.csv") == 0
    predicted = pd.read_csv(tmp_path / "out.csv")["predicted"].to_numpy()
    assert np.mean(predicted == labels[right]) >= 0.9


def as_mode(image: np.ndarray, mode: str) -> Image.Image:
    """A white-on-black MNIST digit in another Pillow mode (dark ink on light where it fits)."""
    dark = 255 - image
    if mode == "RGBA":  # black ink on a transparent background
        return Image.fromarray(np.dstack([np.zeros((28, 28, 3), np.uint8), image]), "RGBA")
    if mode == "I;16":  # 16-bit grayscale, white on black
        return Image.fromarray(image.astype(np.uint16) * 257)
    if mode == "P":
        return Image.fromarray(np.dstack([dark] * 3)).convert("P", palette=Image.Palette.ADAPTIVE)
    return Image.fromarray(dark).convert(mode)


@pytest.mark.parametrize("mode", ["RGBA", "I;16", "P", "LA", "1", "CMYK"])
def test_any_picture_mode_gives_the_mnist_image(tmp_path, mnist_test, mode):
    image = mnist_test[0][0]
    picture = as_mode(image, mode)
    path = tmp_path / ("digit.jpg" if mode == "CMYK" else "digit.png")
    picture.save(path)
    digit = load_digit(path, (28, 28))
    assert digit.dtype == np.uint8 and digit.shape == (28, 28) and digit.max() == 255
    correlation = np.corrcoef(digit.ravel(), image.ravel())[0, 1]
    assert correlation > (0.8 if mode == "1" else 0.95)


@pytest.mark.parametrize("kind", ["GIF", "PNG", "WEBP", "TIFF"])
def test_animations_are_refused_and_single_frames_read(tmp_path, mnist_test, kind):
    frames = [Image.fromarray(255 - image) for image in mnist_test[0][:2]]
    still, moving = tmp_path / "still.png", tmp_path / "moving.png"  # read by content
    frames[0].save(still, format=kind)
    frames[0].save(moving, format=kind, save_all=True, append_images=frames[1:])
    assert load_digit(still, (28, 28)).max() == 255
    with pytest.raises(
        DigitpipeError, match=re.escape(f"{moving}: an animation of several frames")
    ):
        load_digit(moving, (28, 28))


def test_a_camera_jpeg_of_several_images_is_read_from_its_first(tmp_path, mnist_test):
    photo, preview = (Image.fromarray(255 - image).convert("RGB") for image in mnist_test[0][:2])
    path = tmp_path / "camera.jpg"
    photo.save(path, format="MPO", save_all=True, append_images=[preview])
    correlation = np.corrcoef(load_digit(path, (28, 28)).ravel(), mnist_test[0][0].ravel())[0, 1]
    assert correlation > 0.9


def test_other_model_sizes_keep_mnist_proportions(tmp_path, mnist_test):
    Image.fromarray(mnist_test[0][0]).save(tmp_path / "digit.png")
    digit = load_digit(tmp_path / "digit.png", (56, 42))
    rows, cols = np.flatnonzero(digit.any(axis=1)), np.flatnonzero(digit.any(axis=0))
    assert digit.shape == (56, 42) and max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 <= 40
    mass = digit.astype(float) / digit.sum()
    centre = (mass.sum(axis=1) @ np.arange(56), mass.sum(axis=0) @ np.arange(42))
    np.testing.assert_allclose(centre, (28, 21), atol=0.5)


def test_kaggle_test_csv_gives_a_submission(tmp_path, model_dir, mnist_test, capsys):
    images = np.resize(mnist_test[0], (28000, 28, 28))
    write_csv(tmp_path / "test.csv", images, None)
    out, submission = tmp_path / "predictions.csv", tmp_path / "submission.csv"
    assert predict([tmp_path / "test.csv"], model_dir, out, submission) == 0
    assert capsys.readouterr().out.strip() == f"predicted 28,000 images -> {out} and {submission}"
    lines = submission.read_text().splitlines()
    assert lines[0] == "ImageId,Label" and len(lines) == 28001
    frame = pd.read_csv(submission)
    assert frame["ImageId"].tolist() == list(range(1, 28001))
    predictions = pd.read_csv(out)
    assert "label" not in predictions and predictions["id"].tolist() == list(range(1, 28001))
    assert frame["Label"].tolist() == predictions["predicted"].tolist()
    tensor = Predictor.from_dir(model_dir).probabilities(images[:500]).argmax(axis=1)
    np.testing.assert_array_equal(frame["Label"][:500], tensor)


def test_labelled_csv_reports_accuracy_and_keeps_labels(tmp_path, model_dir, mnist_test, capsys):
    images, labels = mnist_test[0][:300], mnist_test[1][:300]
    write_csv(tmp_path / "labelled.csv", images, labels)
    assert predict([tmp_path / "labelled.csv"], model_dir, tmp_path / "out.csv") == 0
    frame = pd.read_csv(tmp_path / "out.csv")
    assert frame["label"].tolist() == labels.tolist()
    accuracy = np.mean(frame["predicted"] == frame["label"])
    assert f"(accuracy {accuracy:.4f} on 300 labelled)" in capsys.readouterr().out


@pytest.mark.parametrize("shape", [(200, 28, 28), (200, 784), (200, 28, 28, 1)])
def test_idx_input_matches_the_tensor_path(
    tmp_path, model_dir, mnist_test, tensor_predictions, shape
):
    write_idx(mnist_test[0][:200].reshape(shape), tmp_path / "images.idx3.gz", compress=True)
    assert predict([tmp_path / "images.idx3.gz"], model_dir, tmp_path / "out.parquet") == 0
    frame = pd.read_parquet(tmp_path / "out.parquet")
    assert frame["id"].tolist() == [str(i) for i in range(200)]
    np.testing.assert_array_equal(frame["predicted"].astype(int), tensor_predictions[:200])


def test_csv_and_parquet_outputs_hold_the_same_table(tmp_path, model_dir, mnist_test):
    write_csv(tmp_path / "few.csv", mnist_test[0][:20], mnist_test[1][:20])
    for name in ("out.csv", "out.parquet"):
        assert predict([tmp_path / "few.csv"], model_dir, tmp_path / name) == 0
    from_csv = pd.read_csv(tmp_path / "out.csv", dtype=str)
    from_parquet = pd.read_parquet(tmp_path / "out.parquet")
    pd.testing.assert_frame_equal(
        from_csv.drop(columns="probability"), from_parquet.drop(columns="probability")
    )
    np.testing.assert_allclose(
        from_csv["probability"].astype(float), from_parquet["probability"], rtol=1e-6
    )
    top3 = from_parquet["top3"][0].split()
    assert len(top3) == 3 and top3[0].split(":")[0] == from_parquet["predicted"][0]
    probabilities = [float(item.split(":")[1]) for item in top3]
    assert probabilities == sorted(probabilities, reverse=True)


def test_size_mismatch_is_refused_clearly(tmp_path, model_dir, mnist_test, capsys):
    small = mnist_test[0][:10, 4:24, 4:24]
    write_csv(tmp_path / "small.csv", small, None)
    assert_user_error(
        (predict([tmp_path / "small.csv"], model_dir, tmp_path / "out.csv"), capsys),
        *("small.csv", "images are 20x20", "model takes 28x28"),
        "give the images as pictures",  # any dataset's, not only digits
        alone=True,
    )
    assert not (tmp_path / "out.csv").exists()


def test_flat_rows_of_no_known_size_are_refused(tmp_path, model_dir, capsys):
    write_idx(np.zeros((3, 300), np.uint8), tmp_path / "flat.idx")
    message = assert_user_error(
        (predict([tmp_path / "flat.idx"], model_dir, tmp_path / "out.csv"), capsys)
    )
    assert f"skipped {tmp_path / 'flat.idx'}: 300 pixel columns is neither 28x28 (784)" in message
    assert not (tmp_path / "out.csv").exists()


def test_label_beyond_the_model_classes_is_refused(tmp_path, model_dir, mnist_test, capsys):
    labels = mnist_test[1][:10].astype(np.int64)
    labels[3] = 12
    write_csv(tmp_path / "labels.csv", mnist_test[0][:10], labels)
    message = assert_user_error(
        (predict([tmp_path / "labels.csv"], model_dir, tmp_path / "out.csv"), capsys)
    )
    assert "labels.csv: label 12 at image 4" in message and "0..9" in message


def bad_files(folder, mnist_test):
    """A good picture, a truncated PNG, a text file, a blank picture and a missing path."""
    Image.fromarray(mnist_test[0][0]).save(folder / "good.png")
    (folder / "corrupt.png").write_bytes((folder / "good.png").read_bytes()[:60])
    (folder / "notes.txt").write_text("not a digit\n")
    Image.new("RGB", (40, 40), "white").save(folder / "blank.png")
    return [folder / name for name in ("good.png", "corrupt.png", "notes.txt", "blank.png", "nope")]


def test_bad_files_are_reported_by_name_and_skipped(tmp_path, model_dir, mnist_test, capsys):
    inputs = bad_files(tmp_path, mnist_test)
    assert predict(inputs, model_dir, tmp_path / "out.csv") == 0
    captured = capsys.readouterr()
    assert "4 unreadable files skipped" in captured.out
    for name, words in {
        "corrupt.png": "not a readable picture",
        "notes.txt": "not a picture",
        "blank.png": "nothing to classify: the picture is blank",
        "nope": "no such file",
    }.items():
        assert f"digitpipe: warning: skipped {tmp_path / name}: {words}" in captured.err
    assert "Traceback" not in captured.err
    assert pd.read_csv(tmp_path / "out.csv")["id"].tolist() == [str(tmp_path / "good.png")]


def test_bad_pictures_in_a_folder_are_skipped_and_strict_fails(
    tmp_path, model_dir, mnist_test, capsys
):
    bad_files(tmp_path, mnist_test)
    assert predict([tmp_path], model_dir, tmp_path / "out.csv") == 0
    assert "2 unreadable files skipped" in capsys.readouterr().out  # the .txt is not a picture
    message = assert_user_error(
        (predict([tmp_path], model_dir, tmp_path / "strict.csv", strict=True), capsys)
    )
    assert message.startswith(f"digitpipe: error: {tmp_path / 'blank.png'}: nothing to classify")
    assert not (tmp_path / "strict.csv").exists()


def test_strict_fails_on_the_first_bad_file(tmp_path, model_dir, mnist_test, capsys):
    inputs = bad_files(tmp_path, mnist_test)
    message = assert_user_error(
        (predict(inputs, model_dir, tmp_path / "out.csv", strict=True), capsys)
    )
    assert f"{tmp_path / 'corrupt.png'}: not a readable picture" in message
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("out.xlsx", "unknown output format '.xlsx'"),
        ("submission from pictures", "needs exactly one input, a pixel CSV"),
        ("nothing readable", "nothing to predict"),
        ("no model", "cannot load the model"),
    ],
)
def test_command_errors_are_one_clear_line(tmp_path, model_dir, mnist_test, capsys, case, words):
    Image.fromarray(mnist_test[0][0]).save(tmp_path / "good.png")
    inputs, out, submission = [tmp_path / "good.png"], tmp_path / "out.csv", None
    if case == "out.xlsx":
        out = tmp_path / "out.xlsx"
    elif case == "submission from pictures":
        submission = tmp_path / "submission.csv"
    elif case == "nothing readable":
        inputs = [tmp_path / "missing.png"]
    else:
        model_dir = tmp_path / "no-model"
    err = assert_user_error((predict(inputs, model_dir, out, submission), capsys), words)
    assert err.splitlines()[-1].startswith("digitpipe: error: ")
    assert not out.exists()


def test_the_default_model_folder_missing_outside_a_project_says_so(
    tmp_path, mnist_test, monkeypatch, capsys
):
    Image.fromarray(mnist_test[0][0]).save(tmp_path / "good.png")
    monkeypatch.chdir(tmp_path)
    message = assert_user_error((main(["predict", "good.png"]), capsys))
    assert f"no model folder models in the current folder ({tmp_path}); run predict" in message
    assert "--model DIR" in message and "--model-uri URI" in message
    assert "dvc repro train" not in message
    # In a project (params.yaml here) that has not trained yet, the advice is to train.
    params = default_params(mnist_data().model_dump(mode="json"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert_user_error(
        (main(["predict", "good.png"]), capsys), "run the train stage first (dvc repro train)"
    )
    assert not (tmp_path / "predictions.csv").exists()


@pytest.mark.parametrize(
    ("out", "submission", "words"),
    [
        ("digits.csv", None, "writing the predictions there would overwrite the input"),
        ("out.csv", "./digits.csv", "writing the predictions there would overwrite the input"),
        ("out.csv", "out.csv", "given as both --out and --submission"),
    ],
)
def test_outputs_never_overwrite_an_input_or_each_other(
    tmp_path, model_dir, mnist_test, capsys, monkeypatch, out, submission, words
):
    monkeypatch.chdir(tmp_path)
    rows = write_csv(tmp_path / "digits.csv", mnist_test[0][:3], None)
    before = rows.read_bytes()
    assert_user_error((predict([rows], model_dir, out, submission), capsys), words)
    assert rows.read_bytes() == before and not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize(
    ("out", "submission", "words"),
    [
        ("a-folder.csv", None, "a-folder.csv: is a folder; give the output a file name"),
        ("out.csv", "a-folder.csv", "a-folder.csv: is a folder"),  # before out.csv is written
        ("digits.csv/out.csv", None, "digits.csv is a file, not a folder"),
    ],
)
def test_outputs_that_cannot_be_files_are_refused_first(
    tmp_path, model_dir, mnist_test, capsys, monkeypatch, out, submission, words
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-folder.csv").mkdir()
    rows = write_csv(tmp_path / "digits.csv", mnist_test[0][:3], None)
    assert_user_error((predict([rows], model_dir, out, submission), capsys), words)
    assert not (tmp_path / "out.csv").exists()


def test_file_names_that_are_not_utf8_and_link_loops(tmp_path, model_dir, mnist_test, capsys):
    """A picture whose name is not UTF-8 is predicted, its id written with \\x escapes; a link
    loop is skipped like any unreadable file, or named with --strict."""
    folder = tmp_path / "pictures"
    folder.mkdir()
    Image.fromarray(mnist_test[0][0]).save(os.fsdecode(bytes(folder) + b"/caf\xe9.png"))
    (folder / "loop-a.png").symlink_to(folder / "loop-b.png")
    (folder / "loop-b.png").symlink_to(folder / "loop-a.png")
    out = tmp_path / "out.csv"
    assert predict([folder], model_dir, out) == 0
    assert "caf\\xe9.png" in out.read_text(encoding="utf-8")
    warned = capsys.readouterr().err
    assert "skipped" in warned and "loop-a.png" in warned and "loop-b.png" in warned
    assert_user_error(
        (predict([folder / "loop-a.png"], model_dir, out, strict=True), capsys), "loop-a.png"
    )


def test_pixel_columns_are_read_by_name_and_odd_scales_are_warned(
    tmp_path, model_dir, mnist_test, tensor_predictions, capsys
):
    """Kaggle's pixel<k> columns in any order give the same predictions; pixels that look
    scaled 0..1 or inverted get a warning."""
    images = mnist_test[0][:PICTURES].reshape(PICTURES, -1)
    order = np.random.default_rng(0).permutation(images.shape[1])
    shuffled = pd.DataFrame(images[:, order], columns=[f"pixel{k}" for k in order])
    shuffled.to_csv(tmp_path / "shuffled.csv", index=False)
    assert predict([tmp_path / "shuffled.csv"], model_dir, tmp_path / "out.csv") == 0
    predicted = pd.read_csv(tmp_path / "out.csv")["predicted"].to_numpy()
    np.testing.assert_array_equal(predicted, tensor_predictions)
    assert "warning" not in capsys.readouterr().err
    for name, pixels in {"binary": images > 0, "inverted": 255 - images}.items():
        frame = pd.DataFrame(pixels.astype(np.uint8), columns=[f"pixel{k}" for k in range(784)])
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
        assert predict([tmp_path / f"{name}.csv"], model_dir, tmp_path / "out.csv") == 0
        assert f"{name}.csv: the mean pixel is" in capsys.readouterr().err


def test_a_params_file_given_must_exist(tmp_path, model_dir, mnist_test, capsys):
    rows = write_csv(tmp_path / "digits.csv", mnist_test[0][:3], None)
    missing = tmp_path / "missing.yaml"
    argv = ["predict", str(rows), "--model", str(model_dir), "--out", str(tmp_path / "o.csv")]
    assert_user_error(
        (main([*argv, "--params", str(missing)]), capsys),
        f"{missing}: cannot read the file (No such file or directory)",
    )
    assert main(argv) == 0  # without --params: params.yaml when there is one, else defaults


def test_write_submission_counts_from_one(tmp_path):
    write_submission(tmp_path / "s.csv", ["7", "2", "1"])
    assert (tmp_path / "s.csv").read_text() == "ImageId,Label\n1,7\n2,2\n3,1\n"


def test_tiff_and_webp_pictures_in_a_folder_are_predicted(tmp_path, model_dir, mnist_test):
    names = ["a.png", "b.tif", "c.TIFF", "d.webp"]
    for name, image in zip(names, mnist_test[0], strict=False):
        Image.fromarray(image).save(tmp_path / name)
    assert predict([tmp_path], model_dir, tmp_path / "out.csv") == 0
    frame = pd.read_csv(tmp_path / "out.csv")
    assert frame["id"].tolist() == [str(tmp_path / name) for name in names]
    assert (
        frame["predicted"].tolist()
        == Predictor.from_dir(model_dir).probabilities(mnist_test[0][:4]).argmax(axis=1).tolist()
    )


def test_a_name_a_spreadsheet_would_run_as_a_formula_is_escaped_in_csv(
    tmp_path, model_dir, mnist_test, monkeypatch
):
    names = ["=1+2.png", "+3.png", "-4.png", "@SUM(A1).png", "plain.png"]
    for name, image in zip(names, mnist_test[0], strict=False):
        Image.fromarray(image).save(tmp_path / name)
    monkeypatch.chdir(tmp_path)
    for out in ("out.csv", "out.parquet"):  # after --, "-4.png" is a name, not an option
        assert main(["predict", "--model", str(model_dir), "--out", out, "--", *names]) == 0
    escaped = ["'=1+2.png", "'+3.png", "'-4.png", "'@SUM(A1).png", "plain.png"]
    frame = pd.read_csv(tmp_path / "out.csv", dtype=str)
    assert frame["source"].tolist() == frame["id"].tolist() == escaped
    assert pd.read_parquet(tmp_path / "out.parquet")["id"].tolist() == names  # not a spreadsheet


# ---------------------------------------------------------------- formats, sizes, empty folders


DIGITS = 6  # test digits written in every format


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
    message = assert_user_error(
        (predict([tmp_path / "small-images.idx3"], model_dir, tmp_path / "out.csv"), capsys)
    )
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
    message = assert_user_error(
        (predict([folder], model_dir, tmp_path / "out.csv", strict=strict), capsys)
    )
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
