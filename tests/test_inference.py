"""Test-time augmentation: the moved copies of a batch, and predictions that average them."""

from __future__ import annotations

import numpy as np
import torch
from helpers.model import model_probabilities

from digitpipe.model.export import ModelSpec
from digitpipe.model.inference import predict_probabilities, shifted_views


def test_shifted_views_move_the_image_one_pixel_each_way():
    image = torch.zeros(1, 1, 5, 5)
    image[0, 0, 2, 2] = 1
    views = shifted_views(image, 1)
    assert all(view.shape == image.shape for view in views)
    bright = {tuple(torch.nonzero(view[0, 0])[0].tolist()) for view in views}
    assert bright == {(2, 2), (2, 3), (2, 1), (3, 2), (1, 2)}
    assert shifted_views(image, 0) == [image]


def test_shifted_views_repeat_the_edge_into_the_opened_space():
    image = torch.zeros(1, 1, 4, 4)
    image[0, 0, 0, :] = 7  # the top row
    moved = {tuple(view[0, 0, :, 0].tolist()) for view in shifted_views(image, 2)}
    assert (7, 7, 7, 0) in moved  # moved down 2: the top row fills the 2 new rows
    assert (0, 0, 0, 0) in moved  # moved up 2: the top row is gone


def test_predictions_average_the_network_over_the_moved_copies(mnist_train):
    images = mnist_train[0][:20]
    spec = ModelSpec("softmax", 28, 28, [str(k) for k in range(10)], 33.3, 78.6, 1)
    torch.manual_seed(0)
    net = spec.build().eval()  # linear in the pixels: moving the image changes its answer
    with torch.no_grad():
        net.dense.weight.mul_(50)  # an untrained network answers near uniformly
    averaged = predict_probabilities(net, images, 7, spec.test_time_shift)  # uneven batches
    np.testing.assert_allclose(averaged, model_probabilities(net, spec, images), atol=1e-6)
    np.testing.assert_allclose(averaged.sum(axis=1), 1, atol=1e-5)
    plain = predict_probabilities(net, images, 7, 0)
    assert np.abs(np.log(averaged) - np.log(plain)).max() > 0.01  # the copies change the answer
