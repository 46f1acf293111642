"""scikit-learn's 8 x 8 handwritten digits as network-sized images.

Real images (10 classes, 1797 samples) that make batch-norm statistics and
binary activations realistic without any download.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import Tensor

__all__ = ["DIGITS_MAX", "digits_images"]

DIGITS_MAX = 16.0  # load_digits pixels are integers 0..16


def digits_images(resolution: int, n: int | None = None, channels: int = 3,
                  seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(x, y)``: digit images as float32 ``N x channels x resolution x resolution`` in [-1, 1].

    Pixels are mapped linearly from [0, 16] to [-1, 1], resized with bilinear
    interpolation (``align_corners=False``) and replicated over ``channels``.
    ``n`` samples (all 1797 when ``None``) are drawn without replacement in an
    order fixed by ``seed``; ``y`` holds the int64 labels 0..9.
    """
    if resolution < 1 or channels < 1:
        raise ValueError(f"resolution and channels must be positive, got {resolution}, {channels}")
    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32)
    labels = torch.as_tensor(digits.target, dtype=torch.int64)
    total = images.shape[0]
    if n is None:
        n = total
    if not 1 <= n <= total:
        raise ValueError(f"n must be in 1..{total}, got {n}")
    index = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]
    x = images[index].unsqueeze(1) * (2.0 / DIGITS_MAX) - 1.0
    x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    x = x.clamp_(-1.0, 1.0).expand(-1, channels, -1, -1).contiguous()
    return x, labels[index]
