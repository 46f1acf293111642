"""Training data for search, training and evaluation, all from local files.

``load_data(source, resolution)`` understands:

* ``digits`` (the default): scikit-learn's bundled 8x8 handwritten digits
  (1,797 real images, 10 classes), upsampled to ``resolution``; nothing is
  downloaded.  A deterministic, class-stratified 80/20 train/test split.
* ``cifar10:DIR``: CIFAR-10 from a local folder holding the "python version"
  pickle batches (``data_batch_1`` .. ``data_batch_5``, ``test_batch``).
* ``folder:DIR``: ImageNet-style folders ``DIR/train/<class>/*.{jpg,png,...}``
  and, if present, ``DIR/val/<class>/...`` as the test set (images are
  decoded lazily with Pillow, resized on the short side and centre-cropped).

Every source also gets a deterministic held-out split of its *training*
images for search-time validation (paper 003 Sec. 4.1.1 takes 50 images per
class): 15% of each class, at most 50 per class, chosen by a seeded
permutation.  Pixels are scaled to [-1, 1].
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import BnhwError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp"}
VAL_FRACTION = 0.15
VAL_MAX_PER_CLASS = 50


class ImageSet(Dataset):
    """A labelled image set: ``x`` in [-1, 1] (N x C x R x R float) and ``y`` (N int64)."""

    def __init__(self, images: Tensor, labels: Tensor, augment: str = "none"):
        self.images = images          # uint8 N x C x R x R
        self.labels = labels
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def resolution(self) -> int:
        return int(self.images.shape[-1])

    def tensors(self) -> tuple[Tensor, Tensor]:
        return to_float(self.images), self.labels

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return to_float(self.images[i]), self.labels[i]

    def subset(self, idx: Sequence[int] | np.ndarray, augment: str | None = None) -> ImageSet:
        idx_t = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        return ImageSet(self.images[idx_t], self.labels[idx_t], self.augment if augment is None else augment)


class LazyImageSet(Dataset):
    """An image-folder set decoded on access."""

    def __init__(self, files: list[Path], labels: list[int], resolution: int):
        self.files = files
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self._resolution = resolution
        self.augment = "none"

    def __len__(self) -> int:
        return len(self.files)

    @property
    def resolution(self) -> int:
        return self._resolution

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return to_float(_load_image(self.files[i], self._resolution)), self.labels[i]

    def subset(self, idx: Sequence[int] | np.ndarray, augment: str | None = None) -> LazyImageSet:
        """Same interface as :meth:`ImageSet.subset`; folder sets are not augmented."""
        return LazyImageSet([self.files[j] for j in idx], [int(self.labels[j]) for j in idx], self._resolution)

    def tensors(self) -> tuple[Tensor, Tensor]:
        xs = [self[i][0] for i in range(len(self))]
        return torch.stack(xs), self.labels


#: the two labelled sets (same interface: len, [i], tensors(), subset(), resolution, augment)
LabelledSet = ImageSet | LazyImageSet


@dataclass
class DataBundle:
    name: str
    num_classes: int
    resolution: int
    in_channels: int
    train: LabelledSet    # training images minus the held-out split
    val: LabelledSet      # held-out split of the training images (search-time validation)
    test: LabelledSet     # the source's test set

    def describe(self) -> str:
        return (f"{self.name}: {len(self.train)} train / {len(self.val)} held-out val / {len(self.test)} test, "
                f"{self.num_classes} classes at {self.resolution}x{self.resolution}")


def to_float(u8: Tensor) -> Tensor:
    return u8.float().div(127.5).sub(1.0)


def resize_u8(images: np.ndarray, resolution: int) -> Tensor:
    """N x C x H x W uint8 -> N x C x R x R uint8 (bilinear, rounded)."""
    t = torch.as_tensor(images).float()
    if t.shape[-1] != resolution or t.shape[-2] != resolution:
        t = F.interpolate(t, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return t.round().clamp(0, 255).to(torch.uint8)


def heldout_split(labels: np.ndarray, seed: int = 0, fraction: float = VAL_FRACTION,
                  max_per_class: int = VAL_MAX_PER_CLASS) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic class-stratified split of training indices into (train, val)."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        k = min(max_per_class, max(1, math.ceil(fraction * len(idx)))) if len(idx) > 1 else 0
        val.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _bundle(name: str, images_train: Tensor, y_train: np.ndarray, test: LabelledSet, num_classes: int,
            resolution: int, augment: str, seed: int) -> DataBundle:
    full = ImageSet(images_train, torch.as_tensor(y_train, dtype=torch.int64), augment)
    tr, va = heldout_split(y_train, seed)
    return DataBundle(name, num_classes, resolution, int(images_train.shape[1]), full.subset(tr),
                      full.subset(va, augment="none"), test)


def load_digits_data(resolution: int = 32, channels: int = 3, seed: int = 0) -> DataBundle:
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = (d.images.astype(np.float32) * (255.0 / 16.0)).round().astype(np.uint8)[:, None]  # N x 1 x 8 x 8
    imgs = np.repeat(imgs, channels, axis=1)
    labels = d.target.astype(np.int64)
    # deterministic stratified 80/20 train/test split
    rng = np.random.default_rng(1234)
    test_parts = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        test_parts.append(idx[: len(idx) // 5])
    test_idx = np.sort(np.concatenate(test_parts))
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    u8 = resize_u8(imgs, resolution)
    test = ImageSet(u8[test_idx], torch.as_tensor(labels[test_idx]))
    return _bundle("digits", u8[train_idx], labels[train_idx], test, 10, resolution, "shift", seed)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except FileNotFoundError:
        raise BnhwError(f"CIFAR-10 folder is missing {path.name} ({path})") from None
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise BnhwError(f"{path}: not a CIFAR-10 python batch ({e})") from None


def load_cifar10(root: str | Path, resolution: int = 32, seed: int = 0) -> DataBundle:
    root = Path(root)
    if not root.is_dir():
        raise BnhwError(f"CIFAR-10 folder {root} does not exist")
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    xs, ys = [], []
    for i in range(1, 6):
        d = _unpickle(root / f"data_batch_{i}")
        xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(d[b"labels"], dtype=np.int64))
    t = _unpickle(root / "test_batch")
    x_test = np.asarray(t[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    y_test = np.asarray(t[b"labels"], dtype=np.int64)
    test = ImageSet(resize_u8(x_test, resolution), torch.as_tensor(y_test))
    return _bundle("cifar10", resize_u8(np.concatenate(xs), resolution), np.concatenate(ys), test, 10,
                   resolution, "crop-flip", seed)


def _load_image(path: Path, resolution: int) -> Tensor:
    from PIL import Image

    try:
        with Image.open(path) as f:
            im = f.convert("RGB")
            w, h = im.size
            s = resolution / min(w, h)
            im = im.resize((max(resolution, round(w * s)), max(resolution, round(h * s))),
                           Image.Resampling.BILINEAR)
            w, h = im.size
            left, top = (w - resolution) // 2, (h - resolution) // 2
            im = im.crop((left, top, left + resolution, top + resolution))
            arr = np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()
    except OSError as e:
        raise BnhwError(f"cannot read image {path} ({e})") from None
    return torch.from_numpy(arr)


def _scan(folder: Path, classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    if classes is None:
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise BnhwError(f"{folder} has no class sub-folders")
    files, labels = [], []
    for ci, c in enumerate(classes):
        for f in sorted((folder / c).glob("*")) if (folder / c).is_dir() else []:
            if f.suffix.lower() in IMAGE_SUFFIXES:
                files.append(f)
                labels.append(ci)
    if not files:
        raise BnhwError(f"{folder} contains no images")
    return files, labels, classes


def load_image_folder(root: str | Path, resolution: int, seed: int = 0) -> DataBundle:
    root = Path(root)
    if not (root / "train").is_dir():
        raise BnhwError(f"image folder {root} needs a train/ sub-folder with one folder per class")
    files, labels, classes = _scan(root / "train")
    full = LazyImageSet(files, labels, resolution)
    tr, va = heldout_split(np.asarray(labels), seed)
    if (root / "val").is_dir():
        tf, tl, _ = _scan(root / "val", classes)
        test: LabelledSet = LazyImageSet(tf, tl, resolution)
    else:
        test = full.subset(va)
    return DataBundle(f"folder:{root.name}", len(classes), resolution, 3, full.subset(tr), full.subset(va), test)


def load_data(source: str = "digits", resolution: int = 32, seed: int = 0) -> DataBundle:
    """Load a data source by name (see the module docstring)."""
    kind, _, arg = source.partition(":")
    if kind == "digits" and not arg:
        return load_digits_data(resolution, seed=seed)
    if kind == "cifar10" and arg:
        return load_cifar10(arg, resolution, seed)
    if kind == "folder" and arg:
        return load_image_folder(arg, resolution, seed)
    raise BnhwError(f"unknown data source {source!r} (use digits, cifar10:DIR or folder:DIR)")


# ----------------------------------------------------------------------------
# augmentation and batching
# ----------------------------------------------------------------------------
def augment_batch(x: Tensor, kind: str, generator: torch.Generator) -> Tensor:
    """Light augmentation on a float batch (no colour jitter, paper 001 Sec. 5.2).

    ``shift``: random translation by up to R/8 pixels (zero = -1 padding);
    ``crop-flip``: the same plus random horizontal flips (natural images).
    """
    if kind == "none":
        return x
    n, _, r, _ = x.shape
    pad = max(1, r // 8)
    xp = F.pad(x, (pad, pad, pad, pad), value=-1.0)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    out = torch.stack([xp[i, :, dy[i]:dy[i] + r, dx[i]:dx[i] + r] for i in range(n)])
    if kind == "crop-flip":
        flip = torch.rand(n, generator=generator) < 0.5
        out[flip] = out[flip].flip(-1)
    return out
