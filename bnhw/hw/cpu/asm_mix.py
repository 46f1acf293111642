"""Instruction mixes of compiled kernels: the assembly GCC emits for the CPU kernels, classified into the
instruction classes of :mod:`bnhw.hw.cpu.perfmodel` (``CLASSES``), its loops and its hot loop.
``tests/test_cpu_perfmodel.py`` uses it to check that the model's mixes equal what the compiler emitted.
"""

from __future__ import annotations

import re
from collections import Counter

from ...errors import BnhwError

__all__ = ["classify_asm", "asm_function", "asm_loops", "count_mix", "hot_loop"]

_A64_Q = re.compile(r"\bv\d+\.(16b|8h|4s|2d)\b")
_A64_D = re.compile(r"\bv\d+\.(8b|4h|2s|1d)\b")
_A64_COND = r"(eq|ne|gt|ge|lt|le|hi|ls|cs|cc|hs|lo|mi|pl|vs|vc)"
_A64_VEC = {
    **{m: "veor" for m in ("eor", "and", "orr", "bic", "orn", "mov", "not", "mvn", "bsl", "bif", "bit")},
    "cnt": "vcnt",
    **{m: "vadd" for m in ("add", "sub", "cmeq", "cmgt", "cmge", "cmhi", "cmhs", "cmlt", "cmle", "neg", "abs")},
    "uaddlp": "vpaddl", "saddlp": "vpaddl", "uadalp": "vpadal", "sadalp": "vpadal", "addp": "vpadd",
}
_A64_FIXED = {
    **{m: "vreduce" for m in ("addv", "uaddlv", "saddlv")}, "movi": "vmovi", "mvni": "vmovi",
    **{m: "vaddw" for m in ("uaddw", "uaddw2", "saddw", "saddw2")},
    **{m: "vmlal" for m in ("smlal", "smlal2", "umlal", "umlal2", "mla")},
    **{m: "vmull" for m in ("smull", "smull2", "umull", "umull2", "mul")},
    **{m: "vnarrow" for m in ("xtn", "xtn2", "uzp1", "uzp2")},
    "umov": "vtocore", "smov": "vtocore", "ins": "vfromcore", "dup": "vfromcore",
}


def _a64_class(m: str, ops: str) -> dict[str, int]:
    regs = [x.strip() for x in ops.split(",")]
    first = regs[0] if regs else ""
    q, d = bool(_A64_Q.search(ops)), bool(_A64_D.search(ops))
    if m in ("ldr", "ldur", "ldp", "ldnp", "ld1", "ldrh", "ldrsh", "ldrb", "ldrsb", "ldrsw"):
        n = 2 if m in ("ldp", "ldnp") else 1
        if m == "ld1":
            return {"vld128" if q else "vld64": 1}
        if re.match(r"q\d+$", first):
            return {"vld128": n}
        if re.match(r"[dsbh]\d+$", first):
            return {"vld64": n}
        return {"load": n}
    if m in ("str", "stur", "stp", "stnp", "st1", "strh", "strb"):
        n = 2 if m in ("stp", "stnp") else 1
        if m == "st1":
            return {"vst128" if q else "vst64": 1}
        if re.match(r"q\d+$", first):
            return {"vst128": n}
        if re.match(r"[dsbh]\d+$", first):
            return {"vst64": n}
        return {"store": n}
    if (m.startswith("b.") or m in ("b", "bl", "blr", "br", "ret", "cbz", "cbnz", "tbz", "tbnz")
            or re.fullmatch("b" + _A64_COND, m)):
        return {"branch": 1}
    if m == "fmov":
        return {"vtocore": 1} if re.match(r"[wx]\d+$", first) else {"vfromcore": 1}
    if q or d:
        if m == "mov" and re.match(r"[wx]\d+$", first):
            return {"vtocore": 1}
        if m in _A64_VEC:
            return {f"{_A64_VEC[m]}_{'q' if q else 'd'}": 1}
        if m in _A64_FIXED:
            return {_A64_FIXED[m]: 1}
        return {f"unknown:{m}": 1}
    if m in ("mul", "madd", "msub", "smull", "umull", "smaddl", "umaddl", "smulh", "umulh", "mneg"):
        return {"mul": 1}
    if m in ("sdiv", "udiv"):
        return {"div64" if first.startswith("x") else "div32": 1}
    return {"alu": 1}


_V7_CORE_REG = re.compile(r"(r\d+|ip|lr|fp|sl|sb|sp)$")
_V7_VEC = {
    **{m: "veor" for m in ("veor", "vand", "vorr", "vbic", "vorn", "vmvn", "vbsl", "vbif", "vbit")},
    "vcnt": "vcnt",
    **{m: "vadd" for m in ("vadd", "vsub", "vceq", "vcgt", "vcge", "vclt", "vcle", "vneg", "vabs")},
    "vpaddl": "vpaddl", "vpadal": "vpadal", "vpadd": "vpadd",
}
_V7_FIXED = {"vaddw": "vaddw", "vmlal": "vmlal", "vmull": "vmull", "vmovn": "vnarrow"}


def _d_regs(ops: str) -> int:
    m = re.search(r"\{([^}]*)\}", ops)
    if not m:
        return 0
    n = 0
    for part in m.group(1).split(","):
        part = part.strip()
        r = re.match(r"d(\d+)-d(\d+)", part)
        if r:
            n += int(r.group(2)) - int(r.group(1)) + 1
        elif re.match(r"d\d+", part):
            n += 1
        elif re.match(r"q\d+", part):
            n += 2
    return n


def _vmem(kind: str, dregs: int) -> dict[str, int]:
    out = {f"{kind}128": dregs // 2}
    if dregs % 2:
        out[f"{kind}64"] = 1
    return {k: v for k, v in out.items() if v}


def _v7_class(m: str, ops: str) -> dict[str, int]:
    base = m.split(".")[0]
    regs = [x.strip() for x in ops.split(",")]
    q = any(re.match(r"q\d+$", r) for r in regs)
    if base in ("vld1", "vld2", "vld3", "vld4", "vldm", "vldmia", "vpop"):
        return _vmem("vld", _d_regs(ops))
    if base in ("vst1", "vst2", "vst3", "vst4", "vstm", "vstmia", "vpush"):
        return _vmem("vst", _d_regs(ops))
    if base == "vldr":
        return {"vld64": 1}
    if base == "vstr":
        return {"vst64": 1}
    if base.startswith("v"):
        if base == "vmov":
            if _V7_CORE_REG.match(regs[0]):
                return {"vtocore": 1}
            if any(_V7_CORE_REG.match(r) for r in regs[1:]):
                return {"vfromcore": 1}
            if "#" in ops:
                return {"vmovi": 1}
            return {"veor_q" if q else "veor_d": 1}
        if base in ("vmvn", "vorr", "vbic") and "#" in ops:
            return {"vmovi": 1}
        if base in _V7_VEC:
            return {f"{_V7_VEC[base]}_{'q' if q else 'd'}": 1}
        if base in _V7_FIXED:
            return {_V7_FIXED[base]: 1}
        return {f"unknown:{m}": 1}
    stem = re.sub(_A64_COND + r"$", "", base) if len(base) > 3 else base
    if stem in ("ldr", "ldrd", "ldrh", "ldrsh", "ldrb", "ldrsb", "ldm", "ldmia", "pop", "ldrex"):
        return {"load": 1}
    if stem in ("str", "strd", "strh", "strb", "stm", "stmia", "push", "strex"):
        return {"store": 1}
    if re.fullmatch(r"(b|bl|blx|bx|cbz|cbnz)" + _A64_COND + r"?(\.[nw])?", base):
        return {"branch": 1}
    if re.fullmatch(r"(mul|muls|mla|mls|smull|umull|smlal|umlal|smla[bt][bt]|smul[bt][bt]|smlaw[bt]|smulw[bt])"
                    + _A64_COND + "?", base):
        return {"mul": 1}
    if re.fullmatch(r"(sdiv|udiv)", base):
        return {"div32": 1}
    return {"alu": 1}


def classify_asm(line: str, isa: str) -> dict[str, int]:
    """Instruction classes (with counts) of one line of GCC assembly for ``isa`` (``{}`` for labels,
    directives and blank lines)."""
    s = (line.split("@")[0] if isa == "armv7" else line.split("//")[0]).strip()
    if not s or s.endswith(":") or s.startswith("."):
        return {}
    parts = s.split(None, 1)
    m, ops = parts[0].lower(), parts[1] if len(parts) > 1 else ""
    return _v7_class(m, ops) if isa == "armv7" else _a64_class(m, ops)


def count_mix(lines: list[str], isa: str) -> Counter:
    """Instruction counts by class of a block of assembly lines."""
    c: Counter = Counter()
    for line in lines:
        c.update(classify_asm(line, isa))
    return c


def asm_function(asm: str, name: str) -> list[str]:
    """The lines of function ``name`` in GCC assembly output."""
    lines = asm.splitlines()
    try:
        start = lines.index(f"{name}:")
    except ValueError:
        raise BnhwError(f"function {name} not found in the assembly") from None
    for i in range(start + 1, len(lines)):
        s = lines[i].strip()
        if s.startswith(".size") and name in s:
            return lines[start:i]
    return lines[start:]


def asm_loops(body: list[str]) -> list[tuple[int, int]]:
    """``(label line, branch line)`` of every backward branch (a loop) in a function's lines."""
    labels = {}
    for i, line in enumerate(body):
        m = re.match(r"^(\.L\w+):", line)
        if m:
            labels[m.group(1)] = i
    out = []
    for j, line in enumerate(body):
        s = line.strip().split()
        if s and s[0].lower().startswith(("b", "cb", "tb")) and s[-1] in labels and labels[s[-1]] < j:
            out.append((labels[s[-1]], j))
    return out


def hot_loop(body: list[str], isa: str, key: str) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """The innermost straight-line loop with the most ``key`` instructions, and the smallest loop
    around it (``None`` if there is none)."""
    loops = asm_loops(body)
    straight = [(i, j) for i, j in loops
                if not any(re.match(r"^\.L\w+:", body[x]) for x in range(i + 1, j + 1))]
    if not straight:
        raise BnhwError("no straight-line loop in the function")
    hot = max(straight, key=lambda ij: (count_mix(body[ij[0]:ij[1] + 1], isa)[key], -(ij[1] - ij[0])))
    outer = [(i, j) for i, j in loops if i <= hot[0] and j >= hot[1] and (i, j) != hot]
    return hot, (min(outer, key=lambda ij: ij[1] - ij[0]) if outer else None)
