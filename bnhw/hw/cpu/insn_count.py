"""Executed-instruction counts of the ARM builds under QEMU, to check the cycle model's instruction mixes.

Debian's qemu-user (7.2) ships no TCG plugins, so the count comes from QEMU's own logs:
``-d in_asm,exec,nochain`` prints every translated block once (its guest instructions) and every
execution of a block (``nochain``: blocks are not chained, so each execution is logged, with the
symbol it belongs to).  The executed instructions are the sum, over the execution lines, of the
instruction count of the block last translated at that address.  The log goes through a FIFO and is
parsed as it is written, so nothing of it is stored.

:func:`bgemm_count` counts ``bnhw_bgemm_neon`` of one size (``src/bgemm_count.c`` calls it once);
:func:`run_count` one inference of a model file with ``bnhw-run`` (``--repeat 2`` minus ``--repeat
1``: loading and I/O cancel).  :func:`modelled_instructions` is what :mod:`.perfmodel` predicts: the
same mixes, each instruction counted once (:func:`~.perfmodel.instruction_counter`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ...errors import BnhwError
from .cross import build_executable, target, toolchain_status

__all__ = ["count_executed", "bgemm_count", "bgemm_count_exe", "run_count", "bnhw_symbols", "SYMBOL_OPS", "by_op", "modelled_by_op", "modelled_bgemm_instructions",
           "modelled_bgemm_small_instructions",
           "modelled_program_instructions"]

_TRACE = re.compile(r"^Trace \d+: 0x[0-9a-f]+ \[[0-9a-f]+/([0-9a-f]+)/[0-9a-f]+/[0-9a-f]+\] ?(\S*)")
_INSN = re.compile(r"^0x([0-9a-f]+):")


def _parse(lines, totals: Counter) -> None:
    sizes: dict[int, int] = {}
    block: int | None = None
    n = 0
    for ln in lines:
        if ln.startswith("Trace "):
            m = _TRACE.match(ln)
            if m:
                totals[m.group(2) or "?"] += sizes.get(int(m.group(1), 16), 0)
            continue
        m = _INSN.match(ln)
        if m:
            if block is None:
                block, n = int(m.group(1), 16), 0
            n += 1
            continue
        if block is not None:          # the end of a translated block's listing
            sizes[block] = n
            block = None
    if block is not None:
        sizes[block] = n


def count_executed(arch: str, exe: str | Path, args: Sequence[str] = (), timeout: float = 1800.0) -> Counter:
    """Executed guest instructions of ``exe args`` under QEMU, per symbol (``"?"``: none).  Raises
    :class:`BnhwError` with one line when QEMU is missing or the program fails."""
    t = target(arch)
    qemu = shutil.which(t.qemu) if t.qemu else None
    if qemu is None:
        raise BnhwError(toolchain_status(arch)[1] if t.qemu else f"{arch}: instruction counts need an ARM target")
    totals: Counter = Counter()
    with tempfile.TemporaryDirectory(prefix="bnhw-icount.") as tmp:
        fifo = Path(tmp, "log")
        os.mkfifo(fifo)
        proc = subprocess.Popen([qemu, *t.qemu_args, "-d", "in_asm,exec,nochain", "-D", str(fifo), str(exe), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        done = threading.Event()

        def stop() -> None:
            done.set()
            proc.kill()
            try:                 # a reader still waiting for QEMU to open the log: open and close it
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass

        killer = threading.Timer(timeout, stop)
        killer.start()
        try:
            with open(fifo, errors="replace") as f:
                _parse(f, totals)
            out, err = proc.communicate()
        finally:
            killer.cancel()
        if done.is_set():
            raise BnhwError(f"{Path(exe).name} ({arch}) under QEMU did not finish within {timeout:g} s")
        if proc.returncode != 0:
            msg = (err.strip().splitlines() or ["(no output)"])[-1]
            raise BnhwError(f"{Path(exe).name} ({arch}) failed under QEMU: {msg}")
    return totals


def bgemm_count_exe(arch: str) -> Path:
    """``bgemm_count`` (``src/bgemm_count.c`` with the kernels) built for ``arch``, cached."""
    from .kernels import kernel_sources, read_source

    return build_executable(arch, {**kernel_sources(), "bgemm_count.c": read_source("bgemm_count.c")}, "bgemm-count")


def bgemm_count(arch: str, m: int, n: int, k: int, kernels: str = "neon", small: bool = False) -> int:
    """Executed instructions of one ``bgemm(M=m, N=n, K=k words)`` of the ``kernels`` set on ``arch``
    (``small``: its ``bgemm_small``, B k-major): the blocks whose symbol is the kernel's (its tiles are
    inlined into it)."""
    counts = count_executed(arch, bgemm_count_exe(arch), [kernels, str(m), str(n), str(k), *(["small"] if small else [])])
    name = f"bnhw_bgemm_small_{kernels}" if small else f"bnhw_bgemm_{kernels}"
    return sum(v for s, v in counts.items() if s == name)


def bnhw_symbols(counts: Counter) -> Counter:
    """The symbols of bnhw's own C code (the runtime and kernel sources define them) and the C library's
    mem* routines the runtime calls; the rest (printing, timing, libc start-up) left out."""
    from .runtime import runtime_sources

    text = "\n".join(runtime_sources().values())
    return Counter({s: v for s, v in counts.items()
                    if s.startswith(("mem", "__mem")) or re.search(r"\b" + re.escape(s) + r"\s*\(", text)})


def run_count(arch: str, model_file: str | Path, image, kernels: str = "neon") -> Counter:
    """Executed instructions of one inference of ``model_file`` on ``image`` (H, W, C ints) with ``bnhw-run``
    on one thread, per symbol: ``--repeat 2`` minus ``--repeat 1`` (loading and I/O cancel; what the
    second run prints differently remains: :func:`bnhw_symbols` keeps bnhw's own code)."""
    import numpy as np

    from .runtime import build_runner

    exe = build_runner(arch)
    with tempfile.TemporaryDirectory(prefix="bnhw-icount.") as tmp:
        fin, fout = Path(tmp, "in.bin"), Path(tmp, "out.bin")
        np.ascontiguousarray(np.asarray(image)[None], dtype="<i4").tofile(fin)
        base = [str(model_file), str(fin), str(fout), "--threads", "1", "--kernels", kernels]
        one = count_executed(arch, exe, [*base, "--repeat", "1"])
        two = count_executed(arch, exe, [*base, "--repeat", "2"])
    two.subtract(one)
    return Counter({s: v for s, v in two.items() if v})


#: the op kind each counted symbol's instructions belong to (functions static to runtime.c may be inlined
#: into their callers; what is inlined into bnhw_model_run (gather, global pool, ...) stays "other")
SYMBOL_OPS = {"bconv_item": "BCONV", "bnhw_bgemm_neon": "BCONV", "bnhw_bgemm_small_neon": "BCONV", "iconv_item": "ICONV",
              "bnhw_gemm_s16_neon": "ICONV", "gemm_s32": "ICONV", "thresh_rows": "THRESH", "bnhw_pack_neon": "THRESH",
              "addrequant_rows": "ADDREQUANT", "addrequant32": "ADDREQUANT", "rprelu_rows": "RPRELU", "rprelu32": "RPRELU",
              "avgpoolsum_rows": "AVGPOOLSUM", "maxpool_rows": "MAXPOOL", "gather_rows": "GATHER"}


def by_op(counts: Counter) -> Counter:
    """Counted instructions per op kind (:data:`SYMBOL_OPS`; anything else is ``"other"``)."""
    out: Counter = Counter()
    for s, v in counts.items():
        out[SYMBOL_OPS.get(s, "other")] += v
    return out


def modelled_by_op(program, arch: str) -> dict[str, float]:
    """Instructions :mod:`.perfmodel` predicts per op kind for one inference of ``program``."""
    from .perfmodel import instruction_counter, model_program

    out: dict[str, float] = {}
    for r in model_program(program, instruction_counter(arch)).rows:
        out[r.op] = out.get(r.op, 0.0) + r.compute_cycles
    return out


def modelled_bgemm_instructions(arch: str, m: int, n: int, k: int) -> float:
    """Instructions :mod:`.perfmodel` predicts for ``bnhw_bgemm_neon(M=m, N=n, K=k)`` on ``arch``."""
    from .perfmodel import bgemm_cycles, instruction_counter

    return bgemm_cycles(instruction_counter(arch), m, n, k)


def modelled_bgemm_small_instructions(arch: str, m: int, n: int, k: int) -> float:
    """Instructions :mod:`.perfmodel` predicts for ``bnhw_bgemm_small_neon(M=m, N=n, K=k)`` on ``arch``."""
    from .perfmodel import bgemm_small_cycles, instruction_counter

    return bgemm_small_cycles(instruction_counter(arch), m, n, k)


def modelled_program_instructions(program, arch: str) -> float:
    """Instructions :mod:`.perfmodel` predicts for one inference of ``program`` on ``arch`` (every op's mixes)."""
    from .perfmodel import instruction_counter, model_program

    return sum(r.compute_cycles for r in model_program(program, instruction_counter(arch)).rows)
