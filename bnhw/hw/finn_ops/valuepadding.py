"""``ValuePadding``: an image padded with a constant other than zero, here a max pool's padding with the
input type's minimum (IR op :mod:`bnhw.hw.ops.swg` as a 1 x 1, stride-1 window generator with ``pad`` and
``pad_value``: its output is the padded image).  FINN's ``ConvolutionInputGenerator`` (no padding) and its
``Pool_hls`` ``MaxPool`` follow it as FINN's own units."""

from ..finn_models import Resources, op_cycles, op_resources
from ..ops import finn_ops
from .base import IrUnit


class ValuePadding(IrUnit):
    ir_op = "SWG"
    why = ("pads with the type's minimum so that padding never wins a max pool; FINN's FMPadding pads zeros "
           "(the unit is modelled as FMPadding_rtl)")

    def _padding(self):
        g, n = self.ir()
        (op,) = [o for o in finn_ops(g, n) if o.op_type == "FMPadding_rtl"]
        return op

    def unit_cycles(self) -> int:
        """FINN's model of ``FMPadding_rtl`` at this padding and SIMD (the window generator's part of the IR
        op is FINN's own ``ConvolutionInputGenerator`` node behind the unit)."""
        return int(op_cycles(self._padding()))

    def unit_resources(self) -> Resources:
        return op_resources(self._padding())
