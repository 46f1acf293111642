"""`bnhw train` (fine-tune from a supernet / from scratch) and `bnhw eval`."""

import json

import pytest
from click.testing import CliRunner

from bnhw.cli import main

TINY_SEARCH = ["search", "--space", "nasbnn-cifar", "--budget", "1M", "--train-images", "64", "--batch-size", "32",
               "--population", "3", "--generations", "0", "--tau-subnets", "0", "--epochs", "1"]


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    out = tmp_path_factory.mktemp("s")
    r = CliRunner().invoke(main, [*TINY_SEARCH, "-o", str(out)])
    assert r.exit_code == 0, r.output
    return out


def test_finetune_inherits_supernet_weights(searched, tmp_path):
    r = CliRunner().invoke(main, ["train", str(searched / "best_arch.json"), "--supernet",
                                  str(searched / "supernet.pt"), "--epochs", "1", "--train-images", "64",
                                  "-o", str(tmp_path / "ft")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "ft" / "result.json").read_text())
    assert res["scheme"] == "finetune" and res["history"][0]["epoch"] == 0   # epoch 0: inherited weights
    inherited = json.loads((searched / "best.json").read_text())["val_accuracy"]
    # the same BN recalibration batches as the search: epoch 0 is exactly the inherited accuracy
    assert res["history"][0]["val_accuracy"] == inherited
    r = CliRunner().invoke(main, ["eval", str(searched / "best_arch.json"), "--checkpoint",
                                  str(tmp_path / "ft" / "model.pt")])
    assert r.exit_code == 0 and f"top-1 {res['test_accuracy']:.4f}" in r.output


def test_scratch_training_and_resume(tmp_path):
    out = tmp_path / "sc"
    args = ["train", "nasbnn-cifar-smallest", "--train-images", "64", "-o", str(out)]
    r = CliRunner().invoke(main, [*args, "--epochs", "1"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, [*args, "--epochs", "2", "--resume"])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "result.json").read_text())
    assert [h["epoch"] for h in res["history"]] == [1, 2] and res["scheme"] == "scratch"


def test_train_errors(tmp_path):
    r = CliRunner().invoke(main, ["train", "nasbnn-d", "--supernet", str(tmp_path / "none.pt"), "-o",
                                  str(tmp_path / "x")])
    assert r.exit_code == 2 and "no such checkpoint" in r.output
    r = CliRunner().invoke(main, ["eval", "nasbnn-cifar-smallest", "--checkpoint", str(tmp_path / "none.pt")])
    assert r.exit_code == 2
