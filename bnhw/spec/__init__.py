"""The bottom layer: what a network is.

* :mod:`bnhw.spec.arch` -- NAS-BNN block networks (:class:`ArchSpec`), loading and atomic writes;
* :mod:`bnhw.spec.cells` -- cell networks of the BNAS v2 / BARS searches (:class:`CellNetSpec`);
* :mod:`bnhw.spec.space` -- the search spaces (membership, sampling, mutation, crossover);
* :mod:`bnhw.spec.zoo` -- bundled architectures by name;
* :mod:`bnhw.spec.protocol` -- :class:`NetworkSpec`, what every consumer may ask of any network spec.

Nothing here imports another bnhw layer except :mod:`bnhw.errors`.
"""

from .arch import (
    RESIDUAL_MODES,
    SPEC_VERSION,
    ArchSpec,
    BlockGeometry,
    BlockSpec,
    Precision,
    StageSpec,
    StemSpec,
    atomic_write_bytes,
    atomic_write_text,
    load_spec,
)

__all__ = ["RESIDUAL_MODES", "SPEC_VERSION", "ArchSpec", "BlockGeometry", "BlockSpec", "Precision", "StageSpec",
           "StemSpec", "atomic_write_bytes", "atomic_write_text", "load_spec"]
