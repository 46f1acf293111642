"""HLS C++ generation for a folded :class:`~bnhw.hw.ir.HwGraph` and its bit-exact C simulation.

* :func:`generate_project` writes a Vitis-HLS project (``firmware/``, testbench,
  ``build_csim.sh``, ``build_prj.tcl``, README) for a graph;
* :func:`csim` compiles it with plain ``g++`` (Xilinx's open-source ``ap_int`` /
  ``hls_stream`` headers shipped with hls4ml) and runs input frames through it;
* :func:`vendor_tools` reports whether ``vitis_hls`` / ``vivado_hls`` / ``vivado``
  are available to finish synthesis.
"""

from .codegen import HLSError, ap_types_dir, generate_project, header_path, render_project
from .csim import compile_csim, csim, default_cache_dir, vendor_tools

__all__ = ["generate_project", "render_project", "csim", "compile_csim", "vendor_tools", "ap_types_dir",
           "header_path", "default_cache_dir", "HLSError"]
