"""bnhw's units for FINN graphs: the qonnx domain ``bnhw.hw.finn_ops`` (one module per unit, as qonnx and
finn-plus keep one CustomOp per file).  Each is a finn-plus ``HWCustomOp`` standing for an IR op FINN has no
unit for (:class:`~.base.IrUnit`); :mod:`bnhw.hw.finn_export` puts them into the FINN graph it builds from
bnhw's IR, and the build report lists them with :attr:`~.base.IrUnit.why`.

qonnx finds an op of this domain by its class name in ``__all__`` (``getCustomOp``)."""

from .addrequant import AddRequant
from .base import DOMAIN, IrUnit, finn_shape, unit_attrs
from .gather import Gather
from .globalavgpool import GlobalAvgPool
from .groupedmvau import GroupedMVAU
from .rprelu import RPReLU
from .windowavg import WindowAvg

__all__ = ["AddRequant", "Gather", "GlobalAvgPool", "GroupedMVAU", "RPReLU", "WindowAvg", "IrUnit", "DOMAIN", "finn_shape",
           "unit_attrs", "UNITS"]

#: op type -> unit class
UNITS: dict[str, type[IrUnit]] = {c.__name__: c for c in (AddRequant, Gather, GlobalAvgPool, GroupedMVAU, RPReLU,
                                                            WindowAvg)}
