"""The MNIST-format loader: paddle's dataset class with a one-pass parser, item for item the same as paddle's own."""

from __future__ import annotations

import os

import numpy as np
import pytest
from paddle.vision import datasets

from paddle_lenet.data import _idx_class, load_split

from .conftest import MNIST5K

FASHION = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist, where installed


@pytest.mark.parametrize("mode,files", [("train", ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")),
                                        ("test", ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"))])
@pytest.mark.parametrize("backend", ["cv2", "pil"])
def test_idx_parser_gives_paddles_items(mode: str, files: tuple[str, str], backend: str) -> None:
    paths = dict(image_path=os.path.join(MNIST5K, files[0]), label_path=os.path.join(MNIST5K, files[1]), mode=mode,
                 download=False, backend=backend)
    ours, theirs = _idx_class(datasets.MNIST)(**paths), datasets.MNIST(**paths)
    assert isinstance(ours, datasets.MNIST) and type(ours).__name__ == "MNIST" and len(ours) == len(theirs)
    assert np.array_equal(ours.images, np.stack(theirs.images)) and np.array_equal(ours.labels, np.stack(theirs.labels))
    for i in (0, 1, 57, len(ours) - 1):
        (a, la), (b, lb) = ours[i], theirs[i]
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and np.array_equal(a, b) and la.dtype == lb.dtype and np.array_equal(la, lb)


def test_load_split_arrays() -> None:
    d = load_split("MNIST5k", None, "train")
    ref = datasets.MNIST(image_path=os.path.join(MNIST5K, "train-images-idx3-ubyte.gz"), download=False,
                         label_path=os.path.join(MNIST5K, "train-labels-idx1-ubyte.gz"), mode="train")
    assert d.pixels.shape == (len(ref), 1, 28, 28) and d.pixels.dtype == np.uint8 and d.pixels.flags.writeable
    assert np.array_equal(d.pixels.reshape(len(ref), -1), np.stack(ref.images).astype(np.uint8))
    assert d.labels.dtype == np.int64 and np.array_equal(d.labels, np.stack(ref.labels))
    assert np.array_equal(load_split("MNIST5k", None, "train", limit=100).pixels, d.pixels[:100])


@pytest.mark.skipif(not os.path.isdir(FASHION), reason="dataset-fashion-mnist is not installed")
def test_full_fashion_mnist_as_paddle_reads_it() -> None:
    d = load_split("FashionMNIST", FASHION, "test")
    ref = datasets.FashionMNIST(image_path=os.path.join(FASHION, "t10k-images-idx3-ubyte.gz"), download=False,
                                label_path=os.path.join(FASHION, "t10k-labels-idx1-ubyte.gz"), mode="test")
    assert len(d) == 10_000 and np.array_equal(d.pixels.reshape(10_000, -1), np.stack(ref.images).astype(np.uint8))
    assert np.array_equal(d.labels, np.stack(ref.labels))
