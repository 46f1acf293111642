"""Output folders and files: checked -o, --force, per-folder locks, staged (atomic) folders, .failed on error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from bnhw.cli import EXIT_INTERNAL, main
from bnhw.errors import BnhwError
from bnhw.flows.outputs import MARKER, check_out_file, check_out_folder, claim_folder, staged_folder


def test_a_staged_folder_appears_only_when_complete(tmp_path):
    out = tmp_path / "run"
    with staged_folder(out, "build", echo=lambda m: None) as st:
        (st.work / "report.json").write_text("{}")
        st.echo("step one")
        assert not out.exists()                       # nothing at -o while the work is going on
        assert (tmp_path / ".run.lock").read_text().strip() == str(os.getpid())
    assert (out / "report.json").is_file()
    assert json.loads((out / MARKER).read_text())["complete"] is True
    assert "step one" in (out / "build.log").read_text()
    assert not (tmp_path / ".run.lock").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]     # no staging folder left behind


def test_a_failed_run_keeps_its_work_as_failed_and_leaves_the_old_output(tmp_path):
    out = tmp_path / "run"
    with staged_folder(out, "build", echo=lambda m: None) as st:
        (st.work / "report.json").write_text('{"old": true}')
    said = []
    with pytest.raises(BnhwError, match="C simulation differs"):
        with staged_folder(out, "build", echo=said.append) as st:
            (st.work / "report.json").write_text('{"new": true}')
            st.echo("lowered")
            raise BnhwError("C simulation differs from the IR")
    assert json.loads((out / "report.json").read_text()) == {"old": True}       # untouched
    failed = tmp_path / "run.failed"
    assert json.loads((failed / "report.json").read_text()) == {"new": True}
    assert "C simulation differs" in (failed / "FAILED.txt").read_text()
    assert "lowered" in (failed / "build.log").read_text()
    assert json.loads((failed / MARKER).read_text())["complete"] is False
    assert any("run.failed" in m for m in said)
    assert not (tmp_path / ".run.lock").exists()


def test_an_interrupted_run_is_kept_as_failed_too(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        with staged_folder(out, "report", echo=lambda m: None) as st:
            (st.work / "half.json").write_text("{")
            raise KeyboardInterrupt
    assert not out.exists()
    assert "interrupted" in (tmp_path / "run.failed" / "FAILED.txt").read_text()


def test_a_live_lock_is_refused_naming_the_holder_and_a_stale_one_is_taken_over(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".run.lock").write_text(f"{holder.pid}\n")
        with pytest.raises(BnhwError, match=f"another bnhw process \\(pid {holder.pid}\\) is writing it"):
            with staged_folder(out, "build", echo=lambda m: None):
                pass
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its lock is stale
    with staged_folder(out, "build", echo=lambda m: None) as st:
        (st.work / "x").write_text("1")
    assert (out / "x").is_file()


def test_out_checks(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(BnhwError, match="file.txt: the file exists"):
        check_out_file(f, force=False)
    check_out_file(f, force=True)
    with pytest.raises(BnhwError, match="is an existing file, a folder is needed"):
        check_out_folder(f, "build", force=False)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("x")
    with pytest.raises(BnhwError, match="non-empty folder that bnhw did not write"):
        check_out_folder(mine, "build", force=False)
    check_out_folder(mine, "build", force=True)
    with claim_folder(tmp_path / "s", "search"):
        (tmp_path / "s" / "log.txt").write_text("x")
    check_out_folder(tmp_path / "s", "search", force=False)         # its own command may write again
    with pytest.raises(BnhwError, match="holds the output of `bnhw search`"):
        check_out_folder(tmp_path / "s", "build", force=False)
    with pytest.raises(BnhwError, match="cannot create the folder|a file is in the way"):
        check_out_folder(f / "sub", "build", force=False)


def _build(out: Path, *extra: str, network: str = "tfc-w1a1") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bnhw", "build", network, "--no-finn", "--no-sim", "--csim-inputs", "2",
                             "-o", str(out), *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=out.parent)


@pytest.mark.slow
def test_two_concurrent_builds_into_one_folder(tmp_path):
    """The second build refuses, naming the first one's pid; the first completes; then --force replaces a file."""
    out = tmp_path / "b"
    # the first build must still be running when the second starts (a few seconds of imports): a NAS-BNN net
    # (batch-norm calibration, export, lowering, the QONNX check) takes several times that after the lock
    first = _build(out, "--no-csim", network="nasbnn-cifar-smallest")
    lock = tmp_path / ".b.lock"
    deadline = time.time() + 120
    while not lock.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert lock.exists(), first.communicate()[0]
    second = _build(out)
    out2, _ = second.communicate(timeout=300)
    out1, _ = first.communicate(timeout=600)
    assert second.returncode == 2, out2
    assert f"another bnhw process (pid {first.pid}) is writing it" in out2
    assert first.returncode == 0, out1
    assert (out / "report.json").is_file() and json.loads((out / MARKER).read_text())["complete"]
    assert not lock.exists() and not list(tmp_path.glob(".b.partial-*"))
    # a third build into the finished folder replaces it (same command)
    r = CliRunner().invoke(main, ["build", "tfc-w1a1", "--no-sim", "--no-csim", "-o", str(out)])
    assert r.exit_code == 0, r.output
    # --force over a file
    f = tmp_path / "afile"
    f.write_text("x")
    r = CliRunner().invoke(main, ["build", "tfc-w1a1", "--no-sim", "--no-csim", "-o", str(f)])
    assert r.exit_code == 2 and "--force" in r.output
    r = CliRunner().invoke(main, ["build", "tfc-w1a1", "--no-sim", "--no-csim", "-o", str(f), "--force"])
    assert r.exit_code == 0 and (f / "report.json").is_file(), r.output
    assert r.exit_code != EXIT_INTERNAL


def test_a_failing_build_leaves_a_failed_folder_not_a_build(tmp_path, monkeypatch):
    """A build that fails after it started writing (here: the C simulation is made to disagree)."""
    import bnhw.hw.hls as hls

    def broken_csim(g, inputs, work_dir):
        import numpy as np
        return np.stack([g.execute(x) + 1 for x in inputs])

    monkeypatch.setattr(hls, "csim", broken_csim)
    out = tmp_path / "b"
    r = CliRunner().invoke(main, ["build", "tfc-w1a1", "--no-sim", "--csim-inputs", "2", "-o", str(out)])
    assert r.exit_code == 2, r.output
    assert "C simulation differs" in r.output and "b.failed" in r.output
    assert not out.exists()
    failed = tmp_path / "b.failed"
    assert (failed / "FAILED.txt").is_file() and (failed / "build.log").is_file() and (failed / "hls").is_dir()
    assert not (failed / "report.json").exists()
