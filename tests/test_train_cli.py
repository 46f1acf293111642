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


def test_init_fine_tunes_a_float_model_in_fixed_point(tmp_path):
    """--init: a float-residual cell net's weights start ARCH's fixed-point form (post-training conversion,
    then a fine-tune); epochs 0 keeps every learned weight and evaluates the converted model."""
    import dataclasses

    import torch

    from bnhw.spec import load_spec

    spec = load_spec("bars-pynq-8x8")
    float_spec = tmp_path / "float.json"
    spec.replace(precision=dataclasses.replace(spec.precision, residual="float")).save(float_spec)
    common = ["--resolution", "8", "--train-images", "64"]
    r = CliRunner().invoke(main, ["train", str(float_spec), *common, "--epochs", "1", "-o", str(tmp_path / "fl")])
    assert r.exit_code == 0, r.output
    init = tmp_path / "fl" / "model.pt"
    r = CliRunner().invoke(main, ["train", "bars-pynq-8x8", "--init", str(init), *common, "--epochs", "0",
                                  "-o", str(tmp_path / "fx")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "fx" / "result.json").read_text())
    assert res["scheme"] == "finetune" and res["init"] == str(init) and res["lr"] == 2e-4
    assert json.loads((tmp_path / "fx" / "arch.json").read_text())["precision"]["residual"] == "fixed"
    assert res["history"][0]["epoch"] == 0 and res["history"][0]["test_accuracy"] == res["test_accuracy"]
    before, after = (torch.load(p, weights_only=False)["state_dict"] for p in (init, tmp_path / "fx" / "model.pt"))
    learned = [k for k in before if k.endswith(("conv.weight", "bn.weight", "bn.bias", "fc.weight"))]
    assert len(learned) > 50 and all(torch.equal(before[k], after[k]) for k in learned)
    r = CliRunner().invoke(main, ["eval", "bars-pynq-8x8", "--checkpoint", str(tmp_path / "fx" / "model.pt"),
                                  "--resolution", "8"])
    assert r.exit_code == 0 and f"top-1 {res['test_accuracy']:.4f}" in r.output
    # bad inputs: one line, exit 2
    r = CliRunner().invoke(main, ["train", "nasbnn-cifar-smallest", "--init", str(init), *common, "-o",
                                  str(tmp_path / "bad")])
    assert r.exit_code == 2 and "weights do not fit" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["train", "bars-pynq-8x8", "--init", str(init), "--supernet", str(init),
                                  "-o", str(tmp_path / "bad2")])
    assert r.exit_code == 2 and "--init and --supernet" in r.output
    r = CliRunner().invoke(main, ["train", "bars-pynq-8x8", "--init", str(tmp_path / "none.pt"),
                                  "-o", str(tmp_path / "bad3")])
    assert r.exit_code == 2 and "--init" in r.output and "no such checkpoint" in r.output
