"""The model zoo on images of any size: each network's documented minimum is exact, and the
ingest stage (before it writes anything) and the train stage (before any MLflow run) refuse
smaller images by name."""

from __future__ import annotations

import pytest
import torch
import yaml
from helpers.data import default_params
from helpers.errors import assert_user_error
from helpers.project import edit_params, ingest

from digitpipe.cli import main
from digitpipe.core.errors import DigitpipeError
from digitpipe.dataset.idx import write_idx
from digitpipe.model.sizes import MIN_SIDE, check_image_size
from digitpipe.model.zoo import BUILDERS, build_model


def forward(arch: str, height: int, width: int) -> torch.Tensor:
    net = build_model(arch, height, width, 3, 0.1, 0.3).eval()
    with torch.no_grad():
        return net(torch.zeros(2, 1, height, width))


@pytest.mark.parametrize("arch", list(BUILDERS))
def test_minimum_side_is_exact(arch):
    assert set(MIN_SIDE) == set(BUILDERS)
    side = MIN_SIDE[arch]
    assert forward(arch, side, side).shape == (2, 3)
    assert forward(arch, side, side + 12).shape == (2, 3)  # not only square images
    check_image_size(arch, side, side + 12)
    if side > 1:
        with pytest.raises(RuntimeError):
            forward(arch, side - 1, side + 12)
        with pytest.raises(DigitpipeError, match=f"at least {side}x{side}"):
            check_image_size(arch, side + 12, side - 1)


def test_images_too_small_are_refused_at_ingest_and_at_train_before_any_run(
    tmp_path, mnist_train, monkeypatch, capsys
):
    images, labels = mnist_train
    small = images[:300, ::4, ::4][:, :7, :7].copy()  # 7x7: too small for every conv network
    write_idx(small, tmp_path / "images")
    write_idx(labels[:300], tmp_path / "labels")
    store = tmp_path / "store"
    store.mkdir()
    params = default_params(
        {"train": {"images": "images", "labels": "labels"}, "test_fraction": 0.2},
        model={"arch": "lenet"},
        track={"tracking_uri": f"sqlite:///{store}/mlflow.db"},
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(tmp_path)

    def refused(stage: str) -> None:
        message = assert_user_error((main([stage]), capsys))
        assert "'lenet' needs images of at least 16x16" in message and "7x7" in message
        assert "mlp" in message and "softmax" in message and "bncnn" not in message

    refused("ingest")  # before it writes anything
    assert not (tmp_path / "data").exists() and not (tmp_path / "reports").exists()
    # Ingested for a model that takes them, then trained with one that does not.
    edit_params(tmp_path, "model", arch="mlp")
    ingest(tmp_path)
    edit_params(tmp_path, "model", arch="lenet")
    refused("train")
    assert not (tmp_path / "models").exists()
    assert not any(store.iterdir())  # checks run before the MLflow run: no store, no run


def layers_count(layers) -> int:
    return sum(p.numel() for layer in layers.values() for p in layer.parameters())


def test_documented_parameter_counts_of_bncnn_and_best():
    """The README's counts (62,538 and 505,322), and the same by hand from its descriptions:
    convs and the hidden dense layer have no bias (batch norm follows), batch norm has a scale
    and a shift per channel."""

    def conv(cin, cout, k):
        return cin * cout * k * k

    def bn(channels):
        return 2 * channels

    def dense(fin, fout, bias=True):
        return fin * fout + (fout if bias else 0)

    # stem conv6x6/2 x32, maxpool, BN; conv3x3 x64, BN; conv3x3 x64, maxpool, BN; 576 -> 10
    bncnn = conv(1, 32, 6) + bn(32) + conv(32, 64, 3) + bn(64) + conv(64, 64, 3) + bn(64)
    bncnn += dense(3 * 3 * 64, 10)
    # stem (14x14), BN; conv3x3 x48, pool, BN; conv3x3 x96, pool, BN; 864 -> 512, BN; 512 -> 10
    best = conv(1, 32, 6) + bn(32) + conv(32, 48, 3) + bn(48) + conv(48, 96, 3) + bn(96)
    best += dense(3 * 3 * 96, 512, bias=False) + bn(512) + dense(512, 10)
    assert (bncnn, best) == (62_538, 505_322)
    assert layers_count(BUILDERS["bncnn"](28, 28, 10)) == bncnn
    assert layers_count(BUILDERS["best"](28, 28, 10)) == best
