"""HLS C++ generation for a folded :class:`~bnhw.hw.ir.HwGraph` and its bit-exact C simulation.

* :func:`generate_project` writes a Vitis-HLS project (``firmware/``, testbench,
  ``build_csim.sh``, ``build_prj.tcl``, README) for a graph;
* :func:`csim` compiles it with plain ``g++`` (Xilinx's open-source ``ap_int`` /
  ``hls_stream`` headers shipped with hls4ml) and runs input frames through it;
* :func:`vendor_tools` reports whether ``vitis_hls`` / ``vivado_hls`` / ``vivado``
  are available to finish synthesis;
* :func:`node_words` lists the ``ap_uint`` words of a unit at its folding: a design
  whose widest word is above ap_int's default 1024 bits is compiled with
  ``AP_INT_MAX_W`` raised (defined in every generated source and passed by the build
  scripts); one above :data:`HLS_MAX_WORD_BITS` (4096) is an :class:`HLSError`.
"""

from .codegen import (
    HLS_MAX_WORD_BITS,
    HLSError,
    ap_int_max_w,
    ap_types_dir,
    header_path,
    node_words,
)
from .csim import compile_csim, csim, csim_cycles, default_cache_dir, vendor_tools
from .project import generate_project, render_project

__all__ = ["generate_project", "render_project", "csim", "csim_cycles", "compile_csim", "vendor_tools", "ap_types_dir",
           "header_path", "default_cache_dir", "HLSError", "node_words", "ap_int_max_w", "HLS_MAX_WORD_BITS"]
