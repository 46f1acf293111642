"""Build C sources into a shared library once, cached by a hash of the sources and flags.

Used by the cycle simulator's core (and the CPU kernels): the library lands in
``$BNHW_CACHE`` (default ``$XDG_CACHE_HOME/bnhw/lib``, i.e. ``~/.cache/bnhw/lib``),
is written to a private temporary name and renamed into place, so concurrent
callers never load half a file.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import BnhwError

__all__ = ["cache_dir", "c_compiler", "shared_library", "load_library", "build_cached", "source_hash",
           "first_error"]

_LOADED: dict[Path, ctypes.CDLL] = {}


def cache_dir(sub: str = "lib", env_var: str = "BNHW_CACHE") -> Path:
    """``$<env_var>``, else ``$XDG_CACHE_HOME/bnhw/<sub>`` (``~/.cache/bnhw/<sub>``)."""
    env = os.environ.get(env_var)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bnhw" / sub


def c_compiler(env_var: str = "CC", default: str = "gcc") -> str:
    cc = os.environ.get(env_var, default)
    path = shutil.which(cc)
    if not path:
        raise BnhwError(f"C compiler {cc!r} not found on PATH: install gcc (e.g. `apt-get install gcc`) "
                        f"or set {env_var}")
    return path


def source_hash(sources: dict[str, str], *extra: str) -> str:
    """A hex digest of ``{file name: text}`` and ``extra`` strings (compiler, flags): a build's cache key."""
    h = hashlib.sha256()
    for k in sorted(sources):
        h.update(k.encode() + b"\0" + sources[k].encode() + b"\0")
    h.update("\0".join(extra).encode())
    return h.hexdigest()


def first_error(stderr: str, tmp: str | None = None) -> str:
    """The compiler's first error line (temporary directory stripped from paths), else its first line."""
    lines = [ln.replace(tmp + os.sep, "") if tmp else ln for ln in stderr.strip().splitlines()]
    for ln in lines:
        if "error" in ln.lower():
            return ln.strip()
    return (lines or ["(no output)"])[0].strip()


def build_cached(target: Path, sources: dict[str, str], command, what: str) -> Path:
    """``target`` if it exists, else build it: write ``sources`` into a private temporary directory beside
    it, run ``command(tmp_dir, out_path)`` (an argument list) and rename the result into place, so
    concurrent builders never see half a file.  A failure is a one-line :class:`BnhwError`."""
    target = Path(target)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as tmp:
        for k, text in sources.items():
            p = Path(tmp, k)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        out = Path(tmp) / target.name
        r = subprocess.run(command(Path(tmp), out), capture_output=True, text=True)
        if r.returncode != 0:
            raise BnhwError(f"building {what} failed: {first_error(r.stderr, tmp)}")
        os.replace(out, target)
    return target


def shared_library(name: str, sources: dict[str, str], flags: tuple[str, ...] = ("-O2",),
                   compiler: str | None = None) -> Path:
    """Compile ``{file name: text}`` (the ``.c`` files are compiled) into ``lib<name>-<hash>.so``."""
    cc = compiler or c_compiler()
    lib = cache_dir() / f"lib{name}-{source_hash(sources, cc, *flags)[:16]}.so"

    def command(tmp: Path, out: Path) -> list[str]:
        return [cc, *flags, "-shared", "-fPIC", "-o", str(out)] + [str(tmp / k) for k in sources if k.endswith(".c")]

    return build_cached(lib, sources, command, name)


def load_library(path: Path) -> ctypes.CDLL:
    path = Path(path)
    if path not in _LOADED:
        _LOADED[path] = ctypes.CDLL(str(path))
    return _LOADED[path]
