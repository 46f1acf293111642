"""QEMU user-mode x86-64 CPU models for the tests of the run-time kernel-set choice."""

from __future__ import annotations

import platform
import shutil

import pytest

#: QEMU's x86-64 CPU models (TCG emulates up to AVX2, no AVX-512) and the sets each must offer, best last
OLDER_X86 = {"qemu64": ["ref"], "Nehalem": ["ref", "portable"], "Haswell": ["ref", "portable", "avx2"]}


def qemu_x86(cpu: str) -> list[str]:
    """The qemu-x86_64 command line for ``cpu``; skips (with the reason) where it cannot run."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("an x86-64 host is needed to build the x86-64 binaries")
    q = shutil.which("qemu-x86_64")
    if q is None:
        pytest.skip("qemu-x86_64 not found on PATH; install with `apt-get install -y qemu-user`")
    return [q, "-cpu", cpu]
