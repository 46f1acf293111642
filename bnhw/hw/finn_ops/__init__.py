"""bnhw's units for FINN graphs: one module per unit (as qonnx and finn-plus keep one CustomOp per file).  Each
is a finn-plus ``HLSBackend`` node standing for an IR op FINN has no unit for (:class:`~.base.IrUnit`);
:mod:`bnhw.hw.finn_export` puts them into the FINN graph it builds from bnhw's IR, and the build report lists
them with :attr:`~.base.IrUnit.why`.

The units live in FINN's HLS domain (``finn.custom_op.fpgadataflow.hls``, :data:`DOMAIN`) as op type
``<Unit>_hls`` (``AddRequant_hls``, ...), registered on import with finn-plus's public decorator
``finn.custom_op.fpgadataflow.hls.register_custom_op`` (qonnx's ``getCustomOp`` then finds them), so FINN's
``is_hls_node`` accepts them and its IP steps (``PrepareIP``, ``HLSSynthIP``, ``CreateStitchedIP``, ...) build
them like its own.  A process must import this package before it loads such a graph with qonnx (bnhw's FINN
modules and steps do)."""

from finn.custom_op.fpgadataflow.hls import register_custom_op

from .addrequant import AddRequant
from .base import DOMAIN, IrUnit, finn_shape, unit_attrs
from .gather import Gather
from .globalavgpool import GlobalAvgPool
from .groupedmvau import GroupedMVAU
from .rprelu import RPReLU
from .valuepadding import ValuePadding
from .windowavg import WindowAvg

__all__ = ["AddRequant", "Gather", "GlobalAvgPool", "GroupedMVAU", "RPReLU", "ValuePadding", "WindowAvg", "IrUnit",
           "DOMAIN", "finn_shape", "unit_attrs", "UNITS", "HLS_UNITS", "hls_op_type", "is_unit"]

#: bnhw unit name -> unit class
UNITS: dict[str, type[IrUnit]] = {c.__name__: c for c in (AddRequant, Gather, GlobalAvgPool, GroupedMVAU, RPReLU,
                                                            ValuePadding, WindowAvg)}


def hls_op_type(unit: str) -> str:
    """The op type of bnhw unit ``unit`` in FINN's HLS domain (``AddRequant`` -> ``AddRequant_hls``)."""
    return f"{unit}_hls"


#: FINN op type (``<Unit>_hls``) -> the registered class (the unit's, named as FINN names its HLS nodes)
HLS_UNITS: dict[str, type[IrUnit]] = {
    hls_op_type(name): register_custom_op(type(hls_op_type(name), (cls,), {"__module__": cls.__module__,
                                                                          "__doc__": cls.__doc__}))
    for name, cls in UNITS.items()}


def is_unit(node) -> bool:
    """Whether ONNX node ``node`` is one of bnhw's units."""
    return node.domain == DOMAIN and node.op_type in HLS_UNITS
