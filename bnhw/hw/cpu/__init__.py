"""Embedded-CPU back end: bit-packed C kernels (reference, portable, x86-64 AVX2 / AVX-512, ARM NEON; the
set chosen at run time by what the CPU has), a multi-threaded C runtime that executes a whole lowered
network from one model file, cross builds run under QEMU, and per-core models.

* :mod:`.program` lowers the hardware IR to the runtime's ops and writes the model file;
* :mod:`.runtime` is the ctypes binding (and the standalone ``bnhw-run`` build);
* :mod:`.kernels` binds the individual kernels (tests, benchmarks);
* :mod:`.cross` builds for ARMv7 / AArch64 and runs under QEMU;
* :mod:`.perfmodel` models the NEON kernels' throughput on Cortex-A9 / A53 / A72;
* :mod:`.latency` gives the search a spec's latency on a CPU target (the model, or a per-layer-shape table
  timed in the runtime for ``native``).
"""
