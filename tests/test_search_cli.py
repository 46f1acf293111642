"""`bnhw search` end to end on a tiny setting: outputs, errors, SIGINT and --resume."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from bnhw.cli import main
from bnhw.estimators.ops import ops_of
from bnhw.spec import load_spec

TINY = ["--space", "nasbnn-cifar", "--budget", "1M", "--train-images", "96", "--batch-size", "32",
        "--population", "4", "--generations", "2", "--bucket", "0.1", "--tau-subnets", "3", "--finetune-epochs", "1",
        "--epochs", "1"]


def bnhw(*args, **kw):
    return subprocess.run([sys.executable, "-m", "bnhw", *args], capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def tiny_search(tmp_path_factory) -> Path:
    """One tiny search for the module's tests (each test copies the folder before changing it)."""
    out = tmp_path_factory.mktemp("tiny") / "s"
    r = CliRunner().invoke(main, ["search", *TINY, "-o", str(out)])
    assert r.exit_code == 0, r.output
    (out.parent / "stdout.txt").write_text(r.stdout)
    return out


def test_tiny_search_writes_everything(tiny_search, tmp_path):
    out = tmp_path / "s"
    shutil.copytree(tiny_search, out)
    for f in ("best_arch.json", "best.json", "pareto.csv", "pareto.png", "evaluated.csv", "supernet.pt",
              "best_subnet.pt", "best_finetuned.pt", "standalone.csv", "search_state.json", "config.json", "log.txt"):
        assert (out / f).is_file(), f
    spec = load_spec(out / "best_arch.json")
    best = json.loads((out / "best.json").read_text())
    assert ops_of(spec) <= 1e6 and best["ops"] == pytest.approx(ops_of(spec))
    assert 0 <= best["val_accuracy"] <= 1 and "32x32" in best["ops_counted_at"]
    rows = list(csv.DictReader(open(out / "pareto.csv")))
    assert rows and all(float(r["ops"]) <= 1e6 for r in rows)
    accs = [float(r["val_accuracy"]) for r in rows]
    assert accs == sorted(accs)                       # a front: more OPs only if more accurate
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    # the extracted best subnet is a normal bnhw checkpoint that exports
    r = CliRunner().invoke(main, ["export", str(out / "best_arch.json"), "--checkpoint",
                                  str(out / "best_subnet.pt"), "-o", str(tmp_path / "b.onnx"), "--verify", "2"])
    assert r.exit_code == 0, r.output
    # a second run into the same folder without --resume refuses to overwrite
    r = CliRunner().invoke(main, ["search", *TINY, "-o", str(out)])
    assert r.exit_code == 2 and "--resume" in r.output


@pytest.mark.parametrize("args,msg", [
    (["--budget", "57X"], "invalid budget '57X'"),
    (["--budget", "100k", "--space", "nasbnn-cifar"], "below the smallest subnet"),
    (["--budget", "57M", "--data", "cifar10:/no/such/dir"], "does not exist"),
    (["--budget", "57M", "--space", "nope"], "unknown search space"),
])
def test_bad_input_is_one_line(tmp_path, args, msg):
    """In process (the CLI's error path is the same; tests/test_bad_inputs.py runs real processes too)."""
    r = CliRunner().invoke(main, ["search", *args, "-o", str(tmp_path / "o")])
    assert r.exit_code == 2, r.output
    err = r.stderr.strip()
    assert msg in err and err.count("\n") == 0 and "Traceback" not in err and err.startswith("error: ")


def test_bad_input_in_a_real_process_is_one_line_on_stderr(tmp_path):
    r = bnhw("search", "--budget", "57X", "-o", str(tmp_path / "o"))
    err = r.stderr.strip()
    assert r.returncode == 2 and err.startswith("error: ") and "invalid budget '57X'" in err and "\n" not in err, err


def test_corrupted_checkpoint_on_resume(tiny_search, tmp_path):
    out = tmp_path / "s"
    shutil.copytree(tiny_search, out)
    (out / "supernet.pt").write_bytes(b"\x00garbage")
    r = bnhw("search", *TINY, "-o", str(out), "--resume")
    assert r.returncode == 2 and "corrupted" in r.stderr and r.stderr.strip().count("\n") == 0


def test_tiny_search_ranks_fine_tunes_and_summarises(tiny_search):
    """Kendall tau over the stand-alone sample (the best among it), the fine-tuned best, the end-of-run summary."""
    best = json.loads((tiny_search / "best.json").read_text())
    rows = list(csv.DictReader(open(tiny_search / "standalone.csv")))
    assert len(rows) == 3 == best["tau_subnets"] and sum(int(r["best"]) for r in rows) == 1
    ops = [float(r["ops"]) for r in rows]
    assert ops == sorted(ops) and all(o <= 1e6 for o in ops)
    best_row = next(r for r in rows if r["best"] == "1")
    assert float(best_row["ops"]) == pytest.approx(best["ops"])
    assert best["finetuned_test_accuracy"] == pytest.approx(float(best_row["standalone_test_accuracy"]), abs=1e-4)
    from bnhw.design.ranking import kendall

    expected = kendall([float(r["inherited_val_accuracy"]) for r in rows],
                       [float(r["standalone_test_accuracy"]) for r in rows])
    assert best["kendall_tau"] == pytest.approx(expected.tau, abs=1e-3)
    assert 0 <= best["kendall_p"] <= 1 and "Kendall" in best["tau_means"]
    # the loss tau and the split ceiling, from the same rows (the inherited test scores are new evaluations)
    col = {k: [float(r[k]) for r in rows] for k in rows[0] if k.endswith(("_accuracy", "_loss"))}
    assert best["kendall_tau_loss"] == pytest.approx(
        kendall(col["inherited_val_loss"], col["standalone_test_loss"]).tau, abs=1e-3)
    assert best["kendall_tau_ceiling"] == pytest.approx(
        kendall(col["inherited_val_accuracy"], col["inherited_test_accuracy"]).tau, abs=1e-3)
    assert best["kendall_tau_ceiling_loss"] == pytest.approx(
        kendall(col["inherited_val_loss"], col["inherited_test_loss"]).tau, abs=1e-3)
    assert all(v > 0 for k, vs in col.items() if k.endswith("_loss") for v in vs)
    assert float(best_row["inherited_test_accuracy"]) == pytest.approx(best["test_accuracy"], abs=1e-4)
    assert 0 < best["chance_accuracy"] < 0.2
    assert set(best["phase_seconds"]) == {"data", "supernet training", "evolutionary search",
                                          "stand-alone training", "outputs"}
    # each run is a bnhw train folder; the fine-tuned best evaluates to what best.json says
    r = CliRunner().invoke(main, ["eval", str(tiny_search / "best_arch.json"), "--checkpoint",
                                  str(tiny_search / "best_finetuned.pt")])
    assert r.exit_code == 0 and f"top-1 {best['finetuned_test_accuracy']:.4f}" in r.output, r.output
    out = (tiny_search.parent / "stdout.txt").read_text()
    assert "fine-tuned test" in out and "(chance " in out and "ranking: Kendall tau" in out and "time: " in out
    assert "the splits alone rank the same inherited subnets at" in out
    assert f"bnhw build {tiny_search}/best_arch.json --checkpoint {tiny_search}/best_finetuned.pt" in out


def test_inherited_scores_of_a_scratch_sample_equal_a_fine_tuning_runs_epoch_0(tiny_search):
    """--tau-init scratch has no epoch 0 of inherited weights: its inherited scores are evaluated the same way."""
    from bnhw.flows.standalone import inherited_scores
    from bnhw.flows.train import model_from_supernet

    run = tiny_search / "standalone" / "00"
    res = json.loads((run / "result.json").read_text())
    cfg = res["config"]
    got = inherited_scores(model_from_supernet(load_spec(run / "arch.json"), tiny_search / "supernet.pt"),
                           data=cfg["data"], resolution=cfg["resolution"], seed=cfg["seed"],
                           train_images=cfg["train_images"])
    for k in ("val_accuracy", "test_accuracy", "val_loss", "test_loss"):
        assert got[k] == pytest.approx(res["history"][0][k], abs=1e-6), k


def _epochs_logged(out):
    return [line.split("epoch ")[1].split(":")[0].split()[0] for line in (out / "log.txt").read_text().splitlines()
            if "] epoch " in line]


def test_sigint_then_resume_redoes_nothing(tmp_path):
    out = tmp_path / "s"
    # (no stand-alone sample: interruption and resumption of the supernet and the evolution is what is tested)
    args = ["search", *TINY[:-2], "--epochs", "4", "--train-images", "96", "--tau-subnets", "0", "-o", str(out)]
    env = dict(os.environ, BNHW_DEBUG="")
    # pytest-xdist workers ignore SIGINT and children inherit that: restore the default first
    p = subprocess.Popen([sys.executable, "-m", "bnhw", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while time.time() < deadline and not ((out / "log.txt").exists() and _epochs_logged(out)):
        time.sleep(0.2)
    assert _epochs_logged(out), "training never finished an epoch"
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    if p.returncode == 0:
        pytest.skip("the run finished before the interrupt arrived")
    assert p.returncode == 130 and "interrupted" in err
    done_before = _epochs_logged(out)
    assert len(done_before) < 4
    r = CliRunner().invoke(main, [*args, "--resume"])          # in process: only the files carry over
    assert r.exit_code == 0, r.output
    epochs = _epochs_logged(out)
    assert epochs == [str(i) for i in range(1, 5)]           # each epoch trained exactly once
    log = (out / "log.txt").read_text()
    assert f"resumed supernet training after epoch {len(done_before)}" in log
    gens = [line for line in log.splitlines() if "] generation " in line]
    assert len(gens) == 3                                      # generations 0..2, none repeated
    # resuming a finished search re-does nothing
    r = CliRunner().invoke(main, [*args, "--resume"])
    assert r.exit_code == 0, r.output
    log2 = (out / "log.txt").read_text()
    assert _epochs_logged(out) == epochs
    assert len([line for line in log2.splitlines() if "] generation " in line]) == 3
    assert "resumed search after generation 2" in log2


def test_device_option():
    """--device auto picks CUDA only where it exists; a device this machine lacks, or no device at all, is one line."""
    import torch

    from bnhw.design.train import resolve_device
    from bnhw.errors import BnhwError

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    missing = "cuda:99" if torch.cuda.is_available() else "cuda"
    for bad, msg in ((missing, "no such CUDA device"), ("meta", "only cpu and cuda"), ("gpu!", "not a device")):
        with pytest.raises(BnhwError, match=msg):
            resolve_device(bad)


def test_missing_device_is_one_line_before_any_work(tmp_path):
    import torch

    missing = "cuda:99" if torch.cuda.is_available() else "cuda"
    r = CliRunner().invoke(main, ["search", *TINY, "--device", missing, "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "no such CUDA device" in r.stderr and r.stderr.strip().count("\n") == 0
    assert not (tmp_path / "o").exists()                # refused before the folder is claimed
