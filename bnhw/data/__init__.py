"""Small data sets for calibration and tests (the training pipeline extends this package)."""

from .digits import digits_images

__all__ = ["digits_images"]
