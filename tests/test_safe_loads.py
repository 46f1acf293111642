"""No pickle runs from a file a user may be handed: training states (train_state.pt, supernet.pt,
bnas_search.pt / bars_search.pt) and checkpoints are read with ``torch.load(weights_only=True)``.  A
crafted pickle that would create a marker file on loading is refused in one line naming the file --
through the library and through the CLI -- and the marker never appears; truncated and empty files
are refused alike."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from bnhw.cli import EXIT_INTERNAL, main
from bnhw.design.train import load_training_checkpoint, restore_training_state, save_training_checkpoint
from bnhw.errors import BnhwError
from bnhw.quant.checkpoint import load_checkpoint, load_model, safe_torch_load

TINY_SEARCH = ["search", "--space", "nasbnn-cifar", "--budget", "1M", "--train-images", "64", "--batch-size", "32",
               "--population", "3", "--generations", "0", "--epochs", "1"]
TINY_TRAIN = ["train", "nasbnn-cifar-smallest", "--train-images", "32", "--batch-size", "16"]


class Plant:
    """Pickles as ``open(marker, "w")``: loading it with a full unpickler creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def crafted(path: Path, marker: Path, kind: str = "torch") -> Path:
    """A training-state-shaped file whose weights would run ``open(marker, "w")``: torch's zip format
    (``kind="torch"``) or a bare pickle (``"pickle"``, torch's legacy format)."""
    state = {"weights": {"w": Plant(marker)}, "epoch": 1, "history": []}
    if kind == "torch":
        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps(state, protocol=2))
    return path


def truncated(path: Path) -> Path:
    buf = io.BytesIO()
    torch.save({"weights": {"w": torch.zeros(64)}, "epoch": 1, "history": []}, buf)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def one_line(msg: str) -> str:
    msg = msg.strip()
    assert "\n" not in msg and "Traceback" not in msg, msg
    return msg


@pytest.mark.parametrize("kind", ["torch", "pickle"])
def test_the_crafted_file_would_run_code_with_a_full_unpickler(tmp_path, kind):
    """The tests below have teeth: a full unpickler executes the crafted file."""
    marker = tmp_path / "ran"
    p = crafted(tmp_path / "state.pt", marker, kind)
    if kind == "torch":
        torch.load(p, weights_only=False)
    else:
        pickle.loads(p.read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("kind", ["torch", "pickle"])
def test_library_loads_refuse_a_crafted_pickle(tmp_path, kind):
    marker = tmp_path / "ran"
    p = crafted(tmp_path / "train_state.pt", marker, kind)
    for load, what in ((load_training_checkpoint, "not a bnhw training state"),
                       (load_checkpoint, "not a readable bnhw checkpoint"),
                       (load_model, "not a readable bnhw checkpoint"),
                       (lambda q: safe_torch_load(q, "not a thing"), "not a thing")):
        with pytest.raises(BnhwError) as ei:
            load(p)
        msg = one_line(str(ei.value))
        assert msg.startswith(f"{p}: {what} (unsafe or corrupted pickle refused: "), msg
        assert not marker.exists()
    if kind == "torch":                 # torch names the global it refused
        assert "GLOBAL io.open" in msg or "GLOBAL builtins.open" in msg, msg


@pytest.mark.parametrize("content", ["truncated", "empty", "garbage", "folder"])
def test_library_loads_refuse_damaged_files_in_one_line(tmp_path, content):
    p = tmp_path / "train_state.pt"
    if content == "truncated":
        truncated(p)
    elif content == "empty":
        p.write_bytes(b"")
    elif content == "garbage":
        p.write_bytes(b"\x00garbage")
    else:
        p.mkdir()
    for load in (load_training_checkpoint, load_checkpoint):
        with pytest.raises(BnhwError) as ei:
            load(p)
        msg = one_line(str(ei.value))
        assert msg.startswith(f"{p}: "), msg
        assert "corrupted" in msg or "no such" in msg, msg


def test_training_states_round_trip_safely_and_misfits_are_one_line(tmp_path):
    """What the trainings save (module, Adam / SGD and LambdaLR states, history, config) loads with
    ``weights_only=True``; a safe state that does not fit the run is a one-line error naming the file."""
    net = torch.nn.Linear(3, 2)
    adam = torch.optim.Adam(net.parameters(), lr=1e-3)
    sgd = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(adam, lambda s: 0.5 ** s)
    net(torch.ones(4, 3)).sum().backward()
    adam.step()
    sgd.step()
    sched.step()
    p = tmp_path / "train_state.pt"
    save_training_checkpoint(p, weights=net.state_dict(), optimizer=adam.state_dict(), w_optimizer=sgd.state_dict(),
                             scheduler=sched.state_dict(), epoch=1, history=[{"epoch": 1, "loss": 0.5}],
                             train_config={"batch_size": 32}, config=json.dumps({"a": 1}), kind="bnas",
                             ops=["zeroise"])
    st = load_training_checkpoint(p)
    net2 = torch.nn.Linear(3, 2)
    adam2 = torch.optim.Adam(net2.parameters(), lr=1e-3)
    sched2 = torch.optim.lr_scheduler.LambdaLR(adam2, lambda s: 0.5 ** s)
    assert restore_training_state(st, weights=net2, optimizer=adam2, scheduler=sched2) == (1, [{"epoch": 1,
                                                                                                  "loss": 0.5}])
    assert torch.equal(net2.weight, net.weight) and sched2.last_epoch == 1
    other = torch.nn.Linear(5, 2)
    with pytest.raises(BnhwError) as ei:
        restore_training_state(st, weights=other)
    assert one_line(str(ei.value)).startswith(f"{p}: its weights state does not fit this run (RuntimeError")
    for bad in ({"epoch": 1}, {"weights": {"w": [1.0]}, "epoch": 1}, {"weights": {}, "epoch": "1"}, [1, 2]):
        torch.save(bad, p)
        with pytest.raises(BnhwError, match="not a bnhw training state") as ei:
            load_training_checkpoint(p)
        one_line(str(ei.value))


def test_fit_and_supernet_inheritance_refuse_a_crafted_state(tmp_path):
    from bnhw.flows.train import FitConfig, fit, model_from_supernet
    from bnhw.spec import load_spec

    marker = tmp_path / "ran"
    out = tmp_path / "run"
    out.mkdir()
    crafted(out / "train_state.pt", marker)
    spec = load_spec("nasbnn-cifar-smallest")
    with pytest.raises(BnhwError, match="train_state.pt: not a bnhw training state .unsafe"):
        fit(spec, FitConfig(epochs=1, train_images=16, batch_size=16), out, resume=True)
    with pytest.raises(BnhwError, match="supernet.pt: not a bnhw training state .unsafe"):
        model_from_supernet(spec, crafted(tmp_path / "supernet.pt", marker))
    assert not marker.exists()


@pytest.mark.parametrize("method", ["bnas", "bars"])
def test_cell_searches_refuse_a_crafted_search_state(tmp_path, method):
    from bnhw.data import digits_images
    from bnhw.design.bars import BARS_CHECKPOINT, BarsConfig, run_bars
    from bnhw.design.bnas import BNAS_CHECKPOINT, BnasConfig, run_bnas

    marker = tmp_path / "ran"
    x, y = digits_images(8, 32)
    common = dict(epochs=1, init_channels=4, nodes=2, batch_size=16, images_per_half=16)
    if method == "bnas":
        crafted(tmp_path / BNAS_CHECKPOINT, marker)
        cfg = BnasConfig(cells=3, **common)
    else:
        crafted(tmp_path / BARS_CHECKPOINT, marker)
        cfg = BarsConfig(budget=3e6, depths=(1, 2), widths=(0.5, 1.0), spec_channels=8, spec_resolution=16, **common)

    def run():
        search = run_bnas if method == "bnas" else run_bars
        return search((x, y), None, cfg, out_dir=tmp_path, resume=True)

    with pytest.raises(BnhwError) as ei:
        run()
    assert "_search.pt: not a bnhw training state (unsafe or corrupted pickle refused" in one_line(str(ei.value))
    assert not marker.exists()


# ----------------------------------------------------------------------------- the command line
def cli(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.output


def refused(code: int, output: str, path: Path, marker: Path) -> str:
    """The CLI refused in one line naming ``path``, with a user-error status, and ran nothing."""
    assert code not in (0, EXIT_INTERNAL), output
    err = one_line(output.strip().splitlines()[-1])
    assert err.startswith(f"error: {path}: ") and "refused" in err, output
    assert "Traceback" not in output
    assert not marker.exists()
    return err


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("searched") / "s"
    code, output = cli(*TINY_SEARCH, "-o", out)
    assert code == 0, output
    return out


def test_cli_search_resume_refuses_a_crafted_supernet(searched, tmp_path):
    out = tmp_path / "s"
    shutil.copytree(searched, out)
    marker = tmp_path / "ran"
    crafted(out / "supernet.pt", marker)
    refused(*cli(*TINY_SEARCH, "-o", out, "--resume"), out / "supernet.pt", marker)


def test_cli_train_refuses_a_crafted_supernet_and_a_crafted_resume_state(searched, tmp_path):
    marker = tmp_path / "ran"
    evil = crafted(tmp_path / "supernet.pt", marker)
    refused(*cli("train", searched / "best_arch.json", "--supernet", evil, "--epochs", "1", "--train-images", "32",
                 "-o", tmp_path / "ft"), evil, marker)
    out = tmp_path / "sc"
    code, output = cli(*TINY_TRAIN, "--epochs", "1", "-o", out)
    assert code == 0, output
    crafted(out / "train_state.pt", marker, "pickle")
    refused(*cli(*TINY_TRAIN, "--epochs", "2", "-o", out, "--resume"), out / "train_state.pt", marker)
    truncated(out / "train_state.pt")
    code, output = cli(*TINY_TRAIN, "--epochs", "2", "-o", out, "--resume")
    assert code not in (0, EXIT_INTERNAL)
    assert one_line(output.strip().splitlines()[-1]).startswith(f"error: {out / 'train_state.pt'}: not a bnhw "
                                                                "training state (corrupted or truncated file")


@pytest.mark.parametrize("kind", ["torch", "pickle"])
def test_cli_eval_refuses_a_crafted_checkpoint(tmp_path, kind):
    """In a separate process, as a user runs it: exit status, stderr and the file system."""
    marker = tmp_path / "ran"
    evil = crafted(tmp_path / "model.pt", marker, kind)
    p = subprocess.run([sys.executable, "-m", "bnhw", "eval", "nasbnn-cifar-smallest", "--checkpoint", str(evil)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode not in (0, EXIT_INTERNAL), p.stderr
    err = one_line(p.stderr)
    assert err.startswith(f"error: {evil}: not a readable bnhw checkpoint (unsafe or corrupted pickle refused: "), err
    assert not marker.exists()


def test_cli_search_resume_refuses_damaged_json_state_in_one_line(searched, tmp_path):
    """The search's other state is JSON (never pickled); damaged, it is refused naming the file."""
    from bnhw.design.evolution import STATE_VERSION

    bad_rng = json.dumps({"version": STATE_VERSION, "generation": 1, "population": [], "evaluated": [],
                          "rng_state": [3, [1, 2], None]})
    for name, content in (("config.json", "{"), ("search_state.json", "\x00garbage"),
                          ("search_state.json", bad_rng)):
        out = tmp_path / f"s-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(searched, out)
        (out / name).write_text(content)
        code, output = cli(*TINY_SEARCH, "-o", out, "--resume")
        assert code not in (0, EXIT_INTERNAL), output
        err = one_line(output.strip().splitlines()[-1])
        assert err.startswith(f"error: {out / name}: ") and ("corrupted" in err or "not a readable" in err), err
