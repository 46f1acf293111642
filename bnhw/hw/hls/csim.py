"""Bit-exact C simulation of the generated HLS code with plain ``g++``.

:func:`csim` renders the project, compiles ``firmware/`` + the testbench once
per distinct source text (the binary is cached under a hash of every
generated file) and runs every input frame through it in one process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ...errors import BnhwError
from ..ir import HwGraph
from .codegen import DEFAULT_CLOCK_NS, DEFAULT_PART, c_ident
from .project import CXXFLAGS, render_project, sources_hash

__all__ = ["csim", "csim_unit", "csim_cycles", "vendor_tools", "default_cache_dir", "compile_csim"]

VENDOR_TOOLS = ("vitis_hls", "vivado_hls", "vivado")


def vendor_tools() -> dict:
    """Which AMD/Xilinx tools are on ``PATH`` (``None`` for a missing one).

    Keys: each tool name -> path or ``None``; ``hls``: the HLS tool to run
    ``build_prj.tcl`` with (or ``None``); ``available``: whether synthesis can
    run here; ``message``: one line for a report.  Never raises.
    """
    found = {t: shutil.which(t) for t in VENDOR_TOOLS}
    hls = "vitis_hls" if found["vitis_hls"] else ("vivado_hls" if found["vivado_hls"] else None)
    if hls:
        msg = f"{hls} found at {found[hls]}: run `{hls} -f build_prj.tcl` in a generated project"
        if not found["vivado"]:
            msg += " (vivado not found: IP export works, bitstream generation does not)"
    else:
        msg = ("vitis_hls / vivado_hls not on PATH: projects are generated and C-simulated with g++; "
               "run build_prj.tcl where the vendor tools are installed")
    return {**found, "hls": hls, "available": hls is not None, "message": msg}


def default_cache_dir() -> Path:
    """``$BNHW_HLS_CACHE``, else ``$XDG_CACHE_HOME/bnhw/hls`` (``~/.cache/bnhw/hls``)."""
    from ..cbuild import cache_dir

    return cache_dir("hls", "BNHW_HLS_CACHE")


def _compiler() -> str:
    cxx = os.environ.get("CXX", "g++")
    path = shutil.which(cxx)
    if not path:
        raise BnhwError(f"C++ compiler {cxx!r} not found on PATH: install g++ (e.g. `apt-get install g++`) "
                        "or set CXX to run the HLS C simulation")
    return path


def compile_csim(g: HwGraph, work_dir=None, *, top: str = "bnhw_top", part: str = DEFAULT_PART,
                 clock_ns: float = DEFAULT_CLOCK_NS) -> Path:
    """Generate (or reuse) the project of ``g`` and build its C simulation; the binary's path.

    The project lives in ``<work_dir or default_cache_dir()>/<graph>_<hash>``;
    an existing binary for the same sources is reused.
    """
    cxx = _compiler()
    files = render_project(g, top=top, part=part, clock_ns=clock_ns)
    key = sources_hash({**files, "<cxx>": cxx})[:16]
    root = Path(work_dir) if work_dir is not None else default_cache_dir()
    proj = root / f"{c_ident(g.name)}_{key}"
    exe = proj / "csim.bin"
    if exe.is_file():
        return exe
    # write into a private directory first, then rename: concurrent callers never see half a project
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{proj.name}.", dir=root))
    for rel, text in files.items():
        p = tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    (tmp / "build_csim.sh").chmod(0o755)
    log = tmp / "build_csim.log"
    # the binary is a function of the sources and the compiler (``key``): one built for the same project in
    # another folder (the same network and folding built again) is reused from the per-user cache
    shared = default_cache_dir() / "bin" / f"{proj.name}.bin"
    if shared.is_file() and root.resolve() != default_cache_dir().resolve():
        shutil.copyfile(shared, tmp / "csim.bin")
        (tmp / "csim.bin").chmod(0o755)
        log.write_text(f"reused {shared} (the same sources and compiler)\n")
        r: subprocess.CompletedProcess = subprocess.CompletedProcess([], 0)
    else:
        env = {**os.environ, "CXX": cxx}
        with open(log, "w") as fh:
            r = subprocess.run(["sh", str(tmp / "build_csim.sh")], stdout=fh, stderr=subprocess.STDOUT, env=env)
        if r.returncode == 0 and (tmp / "csim.bin").is_file():
            try:
                shared.parent.mkdir(parents=True, exist_ok=True)
                staged = shared.with_name(f".{shared.name}.{os.getpid()}.tmp")
                shutil.copyfile(tmp / "csim.bin", staged)
                os.replace(staged, shared)
            except OSError:                 # a read-only cache costs the next build a compile, nothing else
                pass
    if r.returncode != 0 or not (tmp / "csim.bin").is_file():
        failed = root / f"{proj.name}.failed"
        shutil.rmtree(failed, ignore_errors=True)
        tmp.rename(failed)
        raise BnhwError(f"HLS C simulation build of {g.name!r} failed (exit {r.returncode}); "
                        f"log: {failed / 'build_csim.log'}")
    try:
        tmp.rename(proj)
    except OSError:                         # another process finished the same project first
        shutil.rmtree(tmp, ignore_errors=True)
    return exe


def _run_frames(exe: Path, x: np.ndarray, timeout: float | None, what: str) -> tuple[str, bytes]:
    """Run a C-simulation binary on frames ``x`` (int64, back to back): its stdout and output file; a failure,
    a timeout or an hls::stream warning (a read of an empty stream) is one line naming ``what``."""
    with tempfile.TemporaryDirectory(prefix="run.", dir=exe.parent) as d:
        fin, fout = Path(d) / "input.bin", Path(d) / "output.bin"
        fin.write_bytes(x.astype("<i8").tobytes())
        try:
            r = subprocess.run([str(exe), str(fin), str(fout)], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BnhwError(f"{what} timed out after {timeout} s ({exe})") from None
        warn = [ln for ln in r.stdout.splitlines() if "WARNING: Hls::stream" in ln]
        if r.returncode != 0 or warn:
            why = (r.stderr.strip().splitlines() or warn or [f"exit {r.returncode}"])[-1]
            raise BnhwError(f"{what} failed: {why} ({exe})")
        return r.stdout, fout.read_bytes()


def csim(g: HwGraph, inputs: np.ndarray, work_dir=None, *, top: str = "bnhw_top",
         timeout: float | None = None) -> np.ndarray:
    """Run ``inputs`` ``[N, H, W, C]`` through the C simulation of ``g``; outputs ``[N, *out_shape]``.

    Bit-exact against ``g.execute`` (the IR's reference semantics).  A single
    frame ``(H, W, C)`` is accepted too (the result then has ``N = 1``).
    """
    si, so = g.streams[g.input], g.streams[g.output]
    x = np.asarray(inputs)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(si.shape):
        raise BnhwError(f"csim: inputs must be [N, {', '.join(map(str, si.shape))}], got {list(np.shape(inputs))}")
    if x.size and not np.issubdtype(x.dtype, np.integer):
        if not np.all(np.asarray(x) == np.round(x)):
            raise BnhwError("csim: inputs must be integers")
    x = x.astype(np.int64)
    t = si.dtype
    if x.size:
        if t.is_bipolar:
            ok = np.abs(x) <= 1 if t.padded else np.abs(x) == 1
            if not np.all(ok):
                raise BnhwError(f"csim: input stream {si.name!r} is bipolar: values must be -1 / +1")
        elif x.min() < t.min or x.max() > t.max:
            raise BnhwError(f"csim: inputs range [{x.min()}, {x.max()}] overflows {t.finn_name()}")
    exe = compile_csim(g, work_dir, top=top)
    n = x.shape[0]
    if n == 0:
        return np.zeros((0, *so.shape), dtype=np.int64)
    stdout, raw = _run_frames(exe, x, timeout, f"HLS C simulation of {g.name!r}")
    out = np.frombuffer(raw, dtype="<i8").astype(np.int64)
    if out.size != n * so.elems:
        raise BnhwError(f"HLS C simulation of {g.name!r} returned {out.size} values, expected {n * so.elems}")
    return out.reshape(n, *so.shape)


def csim_unit(g: HwGraph, inputs: list[np.ndarray], work_dir) -> np.ndarray:
    """C-simulate a unit graph (:meth:`HwGraph.unit`: one node, any number of inputs) on one frame per input
    (``(H, W, C)`` integer arrays, in the order of the node's inputs) and return its output frame.  The harness
    writes each input stream's words with its element type, calls the unit's top function and reads the output
    words; everything is compiled with g++ in ``work_dir``.  For the units bnhw generates inside FINN graphs
    (:meth:`bnhw.hw.finn_ops.IrUnit.code_generation_ipgen`), checked against ``g.execute``."""
    from .codegen import Generator, ap_types_dir
    from .codegen import element_type as _etype
    from .codegen import word_type as _word

    cxx = _compiler()
    node = g.nodes[0]
    top = c_ident(g.name)
    gen = Generator(g, top)
    files = gen.run()
    work = Path(work_dir)
    for rel, text in files.items():
        p = work / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    ports = ["in"] + [f"in{i}" for i in range(1, len(node.inputs))]
    lines, decls = [], []
    for port, s, x in zip(ports, node.inputs, inputs):
        st, par = g.streams[s], gen.par[s]
        vals = np.asarray(x, dtype=np.int64).reshape(-1)
        if vals.size != st.elems:
            raise BnhwError(f"csim_unit: input {s!r} needs {st.elems} values, got {vals.size}")
        decls.append(f"static const long long v_{port}[{vals.size}] = {{{', '.join(str(int(v)) for v in vals)}}};")
        lines.append(f"    hls::stream<{_word(st.dtype, par)}> s_{port};\n"
                     f"    for (int w = 0; w < {st.elems // par}; w++) {{ {_word(st.dtype, par)} x = 0;\n"
                     f"        for (int p = 0; p < {par}; p++) {_etype(st.dtype)}::set<{par}>(x, p, v_{port}[w * {par} + p]);"
                     f"\n        s_{port}.write(x); }}")
    so, opar = g.streams[g.output], gen.par[g.output]
    call = ", ".join([f"s_{ports[0]}", "s_out", *(f"s_{p}" for p in ports[1:])])
    tb = (f"{gen.prologue()}#include <cstdio>\n#include \"{top}.h\"\n#include \"{top}.cpp\"\n" + "\n".join(decls)
          + "\nint main() {\n" + "\n".join(lines)
          + f"\n    hls::stream<{_word(so.dtype, opar)}> s_out;\n    {top}({call});\n"
          f"    for (int w = 0; w < {so.elems // opar}; w++) {{ {_word(so.dtype, opar)} x = s_out.read();\n"
          f"        for (int p = 0; p < {opar}; p++) printf(\"%lld\\n\", (long long){_etype(so.dtype)}::get<{opar}>(x, p)); }}\n"
          "    return 0;\n}\n")
    (work / "firmware" / "unit_tb.cpp").write_text(tb)
    exe = work / "unit_tb"
    # one frame of one unit: compile time dominates, so no optimisation (the design's own flags are CXXFLAGS)
    flags = [f for f in CXXFLAGS if not f.startswith("-O")] + ["-O0"]
    r = subprocess.run([cxx, *flags, f"-I{ap_types_dir()}", f"-I{work / 'firmware'}", "-o", str(exe),
                        str(work / "firmware" / "unit_tb.cpp")], capture_output=True, text=True)
    if r.returncode != 0:
        raise BnhwError(f"csim_unit: {g.name}: g++ failed: {r.stderr.strip().splitlines()[-1] if r.stderr else ''}")
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    return np.asarray([int(v) for v in out], dtype=np.int64).reshape(so.shape)


def csim_cycles(g: HwGraph, inputs: np.ndarray, work_dir=None, *, top: str = "bnhw_top",
                timeout: float | None = None) -> dict:
    """The cycle count the generated code's schedule gives (``bnhw_dataflow.h``'s BNHW_TIMING build: every
    iteration of a pipelined loop one cycle, a word readable the cycle after it was written, unbounded streams;
    the input written one word per cycle), for the frames ``inputs`` ``[N, H, W, C]`` back to back:
    ``{"frame_done": [...], "ii_cycles", "first_frame_cycles", "frames"}`` (``ii_cycles``: between the last two
    frames).  What Vitis HLS builds if it meets every ``PIPELINE II=1`` pragma and the FIFOs never fill, not a
    synthesis result."""
    x = np.asarray(inputs, dtype=np.int64)
    if x.ndim == 3:
        x = x[None]
    if x.shape[0] < 2:
        raise BnhwError("csim_cycles: needs at least 2 frames (the II is the time between two frames)")
    exe = compile_csim(g, work_dir, top=top)
    timed = exe.with_name("csim_timing.bin")
    if not timed.is_file():
        r = subprocess.run(["sh", str(exe.parent / "build_csim.sh"), "timing"], capture_output=True, text=True,
                           env={**os.environ, "CXX": _compiler()})
        if r.returncode != 0 or not timed.is_file():
            why = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
            raise BnhwError(f"HLS timing build of {g.name!r} failed: {why}")
    stdout, _ = _run_frames(timed, x, timeout, f"HLS timing simulation of {g.name!r}")
    done = [int(ln.split()[2]) for ln in stdout.splitlines() if ln.startswith("BNHW_FRAME_DONE ")]
    if len(done) != x.shape[0]:
        raise BnhwError(f"HLS timing simulation of {g.name!r} reported {len(done)} of {x.shape[0]} frames")
    return {"frames": len(done), "frame_done": done, "first_frame_cycles": done[0], "ii_cycles": done[-1] - done[-2]}

