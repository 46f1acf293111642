"""Where commands write: checked ``-o`` paths, per-folder locks, staged (atomic) output folders.

Rules every command follows (the README's "Outputs" section says the same):

* ``-o`` naming an existing *file* where a folder is expected, an existing
  file where a new file is expected, a path that cannot be created, or a
  non-empty folder that bnhw did not write or that *another command* wrote,
  is a one-line error; ``--force`` replaces it.
* A folder bnhw writes carries ``.bnhw.json`` (the command, its pid, when,
  and whether it completed).  Re-running the same command into its own
  folder replaces it (``build``, ``report``, ``bench-cpu``) or resumes it
  (``search``, ``train``: they refuse without ``--resume`` as before).
* One process at a time per folder: a lock file ``.<name>.lock`` beside the
  folder holds the writer's pid; a second writer refuses and names it.  A
  lock whose process is gone is taken over.
* Folders that are produced in one go (:func:`staged_folder`) are written
  into a hidden sibling and renamed into place only when complete; a
  failure or an interrupt moves the partial work to ``<name>.failed`` with
  its log and the error (``FAILED.txt``), so nothing half-written looks like
  a finished result.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import BnhwError

__all__ = ["MARKER", "check_out_file", "check_out_folder", "claim_folder", "staged_folder",
           "make_dirs", "Staging", "write_png"]

MARKER = ".bnhw.json"


def _why(e: OSError) -> str:
    return e.strerror or type(e).__name__


def make_dirs(path: Path, what: str = "-o") -> Path:
    """``mkdir -p`` with a one-line error naming the path when it cannot be created."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise BnhwError(f"{what} {path}: a file is in the way (a folder is needed there)") from None
    except OSError as e:
        raise BnhwError(f"{what} {path}: cannot create the folder ({_why(e)})") from None
    return path


def _writable_parent(path: Path, what: str) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    make_dirs(parent, what)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BnhwError(f"{what} {path}: cannot write into {parent} (permission denied)")


def _marker(folder: Path) -> dict | None:
    try:
        d = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def check_out_file(path: Path, *, force: bool, what: str = "-o") -> None:
    """A file output: refuse an existing file (unless ``force``), a folder, or an uncreatable parent."""
    path = Path(path)
    if path.is_dir():
        raise BnhwError(f"{what} {path}: is a folder; give a file name")
    if path.exists() or path.is_symlink():
        if not force:
            raise BnhwError(f"{what} {path}: the file exists (--force to replace it)")
    _writable_parent(path, what)


def check_out_folder(path: Path, command: str, *, force: bool, what: str = "-o") -> None:
    """A folder output: refuse a file, or a non-empty folder another command (or no bnhw command) wrote.

    With ``force`` a file in the way is removed and any folder is accepted
    (its contents are replaced by staged commands, resumed by the others).
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise BnhwError(f"{what} {path}: a dangling symbolic link")
    if path.exists() and not path.is_dir():
        if not force:
            raise BnhwError(f"{what} {path}: is an existing file, a folder is needed (--force to replace it)")
        try:
            path.unlink()
        except OSError as e:
            raise BnhwError(f"{what} {path}: cannot remove the file ({_why(e)})") from None
    if path.is_dir() and not force:
        try:
            entries = [p.name for p in path.iterdir()]
        except OSError as e:
            raise BnhwError(f"{what} {path}: cannot list the folder ({_why(e)})") from None
        if entries:
            m = _marker(path)
            if m is None:
                raise BnhwError(f"{what} {path}: a non-empty folder that bnhw did not write (choose another -o, "
                                "or --force to write into it)")
            if m.get("command") != command:
                raise BnhwError(f"{what} {path}: holds the output of `bnhw {m.get('command')}`, not of "
                                f"`bnhw {command}` (choose another -o, or --force to replace it)")
    _writable_parent(path, what)


# ----------------------------------------------------------------------------- locks
def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class _Lock:
    path: Path

    def release(self) -> None:
        with contextlib.suppress(OSError):
            if self.path.read_text().strip() == str(os.getpid()):
                self.path.unlink()


def _lock(folder: Path, command: str) -> _Lock:
    lock = folder.parent / f".{folder.name}.lock"
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = int(lock.read_text().strip() or "0")
            except (OSError, ValueError):
                holder = 0
            if holder and holder != os.getpid() and _alive(holder):
                raise BnhwError(f"{folder}: another bnhw process (pid {holder}) is writing it; wait for it or "
                                f"choose another -o (lock: {lock})") from None
            with contextlib.suppress(FileNotFoundError):      # a stale lock: its process is gone
                lock.unlink()
            continue
        except OSError as e:
            raise BnhwError(f"-o {folder}: cannot create the lock file {lock} ({_why(e)})") from None
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        return _Lock(lock)
    raise BnhwError(f"{folder}: could not take the lock {lock}")


def _write_marker(folder: Path, command: str, complete: bool) -> None:
    from ..spec import atomic_write_text

    atomic_write_text(folder / MARKER, json.dumps({
        "command": command, "pid": os.getpid(), "complete": complete,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=1) + "\n")


# ----------------------------------------------------------------------------- folders
@contextlib.contextmanager
def claim_folder(out: Path, command: str, *, force: bool = False) -> Iterator[Path]:
    """A folder written in place (resumable runs): checked, locked, marked; marked complete on success."""
    out = Path(out)
    check_out_folder(out, command, force=force)
    make_dirs(out.parent if str(out.parent) else Path("."))
    lock = _lock(out, command)
    try:
        make_dirs(out)
        _write_marker(out, command, complete=False)
        yield out
        _write_marker(out, command, complete=True)
    finally:
        lock.release()


def _tee(echo: Callable[[str], None], log: Path) -> Callable[[str], None]:
    def write(msg: str) -> None:
        with contextlib.suppress(OSError), open(log, "a") as f:
            f.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")
        echo(msg)
    return write


@dataclass
class Staging:
    """What :func:`staged_folder` yields: the folder to write into and an echo that also logs."""

    work: Path
    final: Path
    echo: Callable[[str], None]


@contextlib.contextmanager
def staged_folder(out: Path, command: str, *, force: bool = False,
                  echo: Callable[[str], None] = print) -> Iterator[Staging]:
    """Write a whole output folder atomically.

    Yields a :class:`Staging` whose ``work`` folder is a hidden sibling of
    ``out``; on success it becomes ``out`` (an older ``out`` is replaced in one
    rename), on failure or interrupt ``<out>.failed`` (with ``<command>.log``
    and ``FAILED.txt``) and the error goes on.
    """
    out = Path(out)
    check_out_folder(out, command, force=force)
    parent = out.parent if str(out.parent) else Path(".")
    lock = _lock(out, command)
    work = parent / f".{out.name}.partial-{os.getpid()}"
    try:
        shutil.rmtree(work, ignore_errors=True)
        make_dirs(work)
        log = work / f"{command}.log"
        try:
            yield Staging(work, out, _tee(echo, log))
        except BaseException as e:
            failed = parent / f"{out.name}.failed"
            shutil.rmtree(failed, ignore_errors=True)
            reason = "interrupted" if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {e}"
            with contextlib.suppress(OSError):
                (work / "FAILED.txt").write_text(
                    f"`bnhw {command}` did not complete: {reason}\n\n" + "".join(traceback.format_exception(e)))
                _write_marker(work, command, complete=False)
                os.replace(work, failed)
                echo(f"partial work kept in {failed}/ (log: {failed}/{command}.log, error: {failed}/FAILED.txt); "
                     f"{out} was not changed")
            raise
        _write_marker(work, command, complete=True)
        _publish(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        lock.release()


def _publish(work: Path, out: Path) -> None:
    """Put ``work`` in place of ``out``; an older ``out`` goes away only once the new one is there."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    try:
        if out.is_dir():
            os.replace(out, old)
        elif out.exists() or out.is_symlink():
            out.unlink()
        os.replace(work, out)
    except OSError as e:
        if old.exists() and not out.exists():
            os.replace(old, out)
        if e.errno in (errno.EXDEV, errno.EACCES, errno.EPERM):
            raise BnhwError(f"-o {out}: cannot move the finished output into place ({_why(e)})") from None
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_png(fig, path: str | os.PathLike[str], **savefig: object) -> Path:
    """A matplotlib figure as a PNG file, written atomically; the figure is closed."""
    import io

    import matplotlib.pyplot as plt

    from ..spec import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", **savefig)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
