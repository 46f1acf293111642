"""Cross builds for the embedded CPUs and running them under QEMU user-mode emulation.

``build_executable(arch, {file: text}, name)`` compiles the ``.c`` files of a
source set (``.h`` files are written beside them) into a static executable for
``arch`` -- ``native`` (the host gcc with :func:`~.kernels.native_flags`),
``armv7`` (Cortex-A9 with NEON, hard float) or ``aarch64`` (Cortex-A53) -- cached
like :mod:`bnhw.hw.cbuild` by a hash of the sources, compiler and flags, written
under a private name and renamed into place.  ``run_executable`` runs it, under
``qemu-arm`` / ``qemu-aarch64`` for the ARM targets (with ``-cpu`` set to the
target core, so an instruction the core lacks fails instead of passing).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ...errors import BnhwError
from ..cbuild import build_cached, c_compiler, cache_dir, source_hash
from .kernels import native_flags

__all__ = ["Target", "TARGETS", "target", "toolchain_status", "build_executable", "run_executable"]


@dataclass(frozen=True)
class Target:
    name: str
    compiler: str                  # executable name (on PATH)
    flags: tuple[str, ...]
    qemu: str | None = None        # user-mode emulator, None for the host
    qemu_args: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()  # Debian / Ubuntu packages that provide compiler and emulator
    machines: tuple[str, ...] = ()  # platform.machine() values that run the binaries without QEMU


TARGETS: dict[str, Target] = {
    "native": Target("native", "gcc", (), packages=("gcc",)),
    "armv7": Target("armv7", "arm-linux-gnueabihf-gcc",
                    ("-O3", "-std=c99", "-mcpu=cortex-a9", "-mfpu=neon", "-mfloat-abi=hard", "-static", "-pthread"),
                    qemu="qemu-arm", qemu_args=("-cpu", "cortex-a9"),
                    packages=("gcc-arm-linux-gnueabihf", "qemu-user"), machines=("armv7l",)),
    "aarch64": Target("aarch64", "aarch64-linux-gnu-gcc", ("-O3", "-std=c99", "-mcpu=cortex-a53", "-static", "-pthread"),
                      qemu="qemu-aarch64", qemu_args=("-cpu", "cortex-a53"),
                      packages=("gcc-aarch64-linux-gnu", "qemu-user"), machines=("aarch64", "arm64")),
}


def target(arch: str) -> Target:
    """The :class:`Target` named ``arch``; ``native`` gets this host's compiler (``$CC``) and flags."""
    t = TARGETS.get(arch)
    if t is None:
        raise BnhwError(f"unknown CPU target {arch!r}: choose one of {', '.join(TARGETS)}")
    if arch == "native":
        t = Target("native", os.environ.get("CC", t.compiler), native_flags(), packages=t.packages)
    return t


def _needs_qemu(t: Target) -> bool:
    return t.qemu is not None and platform.machine().lower() not in t.machines


def toolchain_status(arch: str) -> tuple[bool, str]:
    """``(ok, message)``: whether the compiler (and QEMU, where needed) for ``arch`` are on PATH.

    The message names what is missing and the ``apt-get`` command that installs it.
    """
    t = target(arch)
    missing = [t.compiler] if shutil.which(t.compiler) is None else []
    if _needs_qemu(t):
        assert t.qemu is not None  # _needs_qemu
        if shutil.which(t.qemu) is None:
            missing.append(t.qemu)
    if not missing:
        return True, f"{arch}: {t.compiler}" + (f" + {t.qemu}" if _needs_qemu(t) else "") + " found"
    return False, (f"{arch}: {' and '.join(missing)} not found on PATH; install with "
                   f"`apt-get install -y {' '.join(t.packages)}`")


def build_executable(arch: str, sources: dict[str, str], name: str, out_dir: str | Path | None = None,
                     extra_flags: Sequence[str] = ()) -> Path:
    """Compile the ``.c`` files of ``{file name: text}`` (plus ``-lm``) into an executable for ``arch``.

    Cached as ``<out_dir>/<name>-<arch>-<hash>`` (default ``out_dir``: the bnhw cache's ``bin``);
    ``extra_flags`` (e.g. sanitizers) are appended to the target's flags and are part of the hash.
    Raises :class:`BnhwError` with one line when the toolchain is missing or the compiler fails.
    """
    t = target(arch)
    found = shutil.which(t.compiler)
    if found is None:
        raise BnhwError(toolchain_status(arch)[1])
    cc = found if arch != "native" else c_compiler()
    flags = (*t.flags, *extra_flags)
    cfiles = [k for k in sorted(sources) if k.endswith(".c")]
    if not cfiles:
        raise BnhwError(f"building {name} for {arch}: no .c files among {', '.join(sorted(sources)) or 'none'}")
    root = Path(out_dir) if out_dir is not None else cache_dir("bin")
    exe = root / f"{name}-{arch}-{source_hash(sources, arch, cc, *flags)[:16]}"

    def command(tmp: Path, out: Path) -> list[str]:
        return [cc, *flags, "-I", str(tmp), "-o", str(out), *(str(tmp / k) for k in cfiles), "-lm"]

    return build_cached(exe, sources, command, f"{name} for {arch}")


def run_executable(arch: str, exe: str | Path, args: Sequence[str] = (), timeout: float | None = 600.0,
                   input: str | bytes | None = None, text: bool = True, cwd: str | Path | None = None,
                   env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``exe args`` built for ``arch`` (under QEMU for an ARM target on another host), capturing output.

    ``env`` adds to (does not replace) the environment.  Returns the completed process whatever its
    exit status; raises :class:`BnhwError` when QEMU is missing or the run exceeds ``timeout`` seconds.
    """
    t = target(arch)
    cmd = [str(exe), *map(str, args)]
    if _needs_qemu(t):
        assert t.qemu is not None  # _needs_qemu
        qemu = shutil.which(t.qemu)
        if qemu is None:
            raise BnhwError(toolchain_status(arch)[1])
        cmd = [qemu, *t.qemu_args, *cmd]
    if isinstance(input, str) and not text:
        input = input.encode()
    try:
        return subprocess.run(cmd, capture_output=True, text=text, input=input, timeout=timeout, cwd=cwd,
                              env={**os.environ, **env} if env else None)
    except subprocess.TimeoutExpired:
        raise BnhwError(f"{Path(exe).name} ({arch}) did not finish within {timeout:g} s") from None
    except OSError as e:
        raise BnhwError(f"cannot run {Path(exe).name} ({arch}): {e.strerror or e}") from None
