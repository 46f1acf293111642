"""Data sources: the bundled digits, CIFAR-10 pickles and image folders, all local."""

import pickle

import numpy as np
import pytest
import torch

from bnhw.data.datasets import augment_batch, heldout_split, load_data
from bnhw.errors import BnhwError


def test_digits_splits_are_deterministic_and_disjoint():
    a = load_data("digits", 32)
    b = load_data("digits", 32)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.val.labels, b.val.labels)
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert a.num_classes == 10 and a.train.images.shape[1:] == (3, 32, 32)
    x, _ = a.train.tensors()
    assert x.min() >= -1 and x.max() <= 1
    # no image of the held-out split is in the training split
    tr = {t.numpy().tobytes() for t in a.train.images}
    assert sum(v.numpy().tobytes() in tr for v in a.val.images) < 5  # digits has a few duplicate images


def test_heldout_split_is_stratified():
    labels = np.repeat(np.arange(4), [10, 20, 400, 1])
    tr, va = heldout_split(labels, seed=3)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(labels)
    per = np.bincount(labels[va], minlength=4)
    assert list(per) == [2, 3, 50, 0]          # 15% rounded up, at most 50, singletons stay in train


def _fake_cifar(root, n=20):
    rng = np.random.default_rng(0)
    root.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(root / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"labels": list(rng.integers(0, 10, n))}, f)


def test_cifar10_from_local_pickles(tmp_path):
    _fake_cifar(tmp_path / "cifar-10-batches-py")
    d = load_data(f"cifar10:{tmp_path}", 32)
    assert len(d.train) + len(d.val) == 100 and len(d.test) == 20
    assert d.train.images.dtype == torch.uint8 and d.train.augment == "crop-flip"


def test_cifar10_errors(tmp_path):
    with pytest.raises(BnhwError, match="does not exist"):
        load_data(f"cifar10:{tmp_path / 'nope'}")
    (tmp_path / "c").mkdir()
    with pytest.raises(BnhwError, match="missing data_batch_1"):
        load_data(f"cifar10:{tmp_path / 'c'}")
    _fake_cifar(tmp_path / "d")
    (tmp_path / "d" / "test_batch").write_bytes(b"garbage")
    with pytest.raises(BnhwError, match="not a CIFAR-10 python batch"):
        load_data(f"cifar10:{tmp_path / 'd'}")


def test_image_folder(tmp_path):
    from PIL import Image

    for split, n in (("train", 6), ("val", 2)):
        for c in ("cat", "dog"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(tmp_path / split / c / f"{i}.png")
    d = load_data(f"folder:{tmp_path}", 16)
    assert d.num_classes == 2 and len(d.test) == 4 and len(d.train) + len(d.val) == 12
    x, y = d.test[0]
    assert x.shape == (3, 16, 16) and int(y) == 0
    with pytest.raises(BnhwError, match="train/"):
        load_data(f"folder:{tmp_path / 'val'}")


def test_unknown_source():
    with pytest.raises(BnhwError, match="unknown data source"):
        load_data("mnist")


def test_augmentation_shapes_and_determinism():
    x = torch.rand(8, 3, 32, 32) * 2 - 1
    a = augment_batch(x, "crop-flip", torch.Generator().manual_seed(0))
    b = augment_batch(x, "crop-flip", torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)
    assert torch.equal(augment_batch(x, "none", torch.Generator()), x)
