"""bnhw: hardware-aware co-design toolkit for binary neural networks."""

__version__ = "0.1.0"

from .errors import BnhwError, SpecError  # noqa: E402
from .spec import ArchSpec, BlockSpec, Precision, StageSpec, StemSpec, load_spec  # noqa: E402

__all__ = ["ArchSpec", "BlockSpec", "BnhwError", "Precision", "SpecError", "StageSpec", "StemSpec", "load_spec",
           "__version__"]
