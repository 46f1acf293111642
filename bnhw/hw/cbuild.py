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

__all__ = ["cache_dir", "c_compiler", "shared_library", "load_library"]

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


def shared_library(name: str, sources: dict[str, str], flags: tuple[str, ...] = ("-O2",),
                   compiler: str | None = None) -> Path:
    """Compile ``{file name: text}`` (the ``.c`` files are compiled) into ``lib<name>-<hash>.so``."""
    cc = compiler or c_compiler()
    h = hashlib.sha256()
    for k in sorted(sources):
        h.update(k.encode() + b"\0" + sources[k].encode() + b"\0")
    h.update(" ".join((cc, *flags)).encode())
    root = cache_dir()
    lib = root / f"lib{name}-{h.hexdigest()[:16]}.so"
    if lib.is_file():
        return lib
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}.", dir=root) as tmp:
        for k, text in sources.items():
            Path(tmp, k).write_text(text)
        out = Path(tmp) / lib.name
        cmd = [cc, *flags, "-shared", "-fPIC", "-o", str(out)] + [str(Path(tmp, k)) for k in sources
                                                                   if k.endswith(".c")]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            first = (r.stderr.strip().splitlines() or ["(no output)"])[0]
            raise BnhwError(f"building {name} failed: {first}")
        os.replace(out, lib)
    return lib


def load_library(path: Path) -> ctypes.CDLL:
    path = Path(path)
    if path not in _LOADED:
        _LOADED[path] = ctypes.CDLL(str(path))
    return _LOADED[path]
