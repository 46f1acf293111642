"""Bad input to every command: a one-line error naming the field or file, a non-zero exit that is not the
internal-error code (70), never a traceback.

One table (:data:`CASES`) over all commands and input kinds -- each field of a spec, wrong types, missing
files, truncated or corrupt ONNX / npz / checkpoint / folding / hardware-graph / model files, out-of-range
numbers, conflicting flags -- and a seeded fuzz test that mutates spec JSON and ONNX bytes.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from helpers.graphs import int_graph
from onnx import TensorProto, helper

from bnhw.cli import EXIT_INTERNAL, main
from bnhw.hw.cpu.program import MAGIC
from bnhw.spec.zoo import get_arch

SPEC = get_arch("nasbnn-cifar-smallest").to_dict()


def _spec_with(path: str, value) -> dict:
    """SPEC with the field at ``path`` (dots and [i]) set to ``value`` (``...`` deletes it)."""
    d = json.loads(json.dumps(SPEC))
    keys = [int(k) if k.isdigit() else k for k in path.replace("[", ".").replace("]", "").split(".")]
    obj = d
    for k in keys[:-1]:
        obj = obj[k]
    if value is ...:
        del obj[keys[-1]]
    else:
        obj[keys[-1]] = value
    return d


#: spec files with one bad field each: file name -> (field path, value)
BAD_SPECS = {
    "no_stages.json": ("stages", ...),
    "stages_empty.json": ("stages", []),
    "stages_str.json": ("stages", "many"),
    "resolution_neg.json": ("resolution", -32),
    "resolution_str.json": ("resolution", "32"),
    "classes_zero.json": ("num_classes", 0),
    "in_channels_bool.json": ("in_channels", True),
    "stem_channels_str.json": ("stem.channels", "x"),
    "stem_kernel_zero.json": ("stem.kernel", 0),
    "stem_missing.json": ("stem", ...),
    "block_groups.json": ("stages[1].blocks[0].groups", 5),
    "block_kernel.json": ("stages[0].blocks[0].kernel", 7),
    "block_channels_neg.json": ("stages[0].blocks[0].channels", -8),
    "block_stride.json": ("stages[0].blocks[0].stride", 3),
    "precision_residual.json": ("precision.residual", "double"),
    "precision_bits.json": ("precision.residual_bits", 0),
    "space_unknown.json": ("space", "no-such-space"),
    "version.json": ("version", 99),
}

#: (id, argv with {d} for the fixture folder, text the one-line message must contain)
CASES = [
    # --- ops: every input kind and each field of a spec
    ("ops-missing-file", ["ops", "{d}/missing.json"], "missing.json: no such file"),
    ("ops-unknown-name", ["ops", "no-such-arch"], "neither a file nor a bundled network"),
    ("ops-qonnx", ["ops", "{d}/tfc.onnx"], "is a QONNX model; `bnhw ops` takes"),
    ("ops-qonnx-named-json", ["ops", "{d}/onnx_named.json"], "is a QONNX model"),
    ("ops-finn-onnx", ["ops", "{d}/finn.onnx"], "is a FINN-ONNX model"),
    ("ops-plain-onnx", ["ops", "{d}/plain.onnx"], "is an ONNX model without quantisers"),
    ("ops-checkpoint", ["ops", "{d}/ckpt.pt"], "is a PyTorch checkpoint"),
    ("ops-npz", ["ops", "{d}/arrays.npz"], "is a NumPy archive"),
    ("ops-hw-graph", ["ops", "{d}/graph/hw_graph.json"], "is a hardware graph"),
    ("ops-build-folder", ["ops", "{d}/graph"], "is a build folder"),
    ("ops-plain-folder", ["ops", "{d}"], "a folder without hw_graph.json"),
    ("ops-empty", ["ops", "{d}/empty.json"], "empty.json: empty file"),
    ("ops-garbage", ["ops", "{d}/garbage.bin"], "garbage.bin: not a network file"),
    ("ops-not-utf8", ["ops", "{d}/latin1.json"], "latin1.json: not UTF-8"),
    ("ops-truncated-json", ["ops", "{d}/truncated.json"], "truncated.json: not valid JSON"),
    ("ops-json-list", ["ops", "{d}/list.json"], "a JSON list, expected an object"),
    *[(f"ops-spec-{name[:-5]}", ["ops", f"{{d}}/{name}"], field.split("[")[0].split(".")[0])
      for name, (field, _) in BAD_SPECS.items()],
    ("ops-cell-bad-op", ["ops", "{d}/cell_bad_op.json"], "genotype"),
    # --- sample
    ("sample-space", ["sample", "--space", "nope"], "nope"),
    ("sample-n-zero", ["sample", "-n", "0"], "-n"),
    ("sample-out-exists", ["sample", "-o", "{d}/exists.txt"], "exists.txt: the file exists"),
    # --- export
    ("export-qonnx", ["export", "{d}/tfc.onnx", "-o", "{d}/new.onnx"], "it is QONNX already"),
    ("export-out-exists", ["export", "nasbnn-cifar-smallest", "-o", "{d}/tfc.onnx"], "tfc.onnx: the file exists"),
    ("export-out-folder", ["export", "nasbnn-cifar-smallest", "-o", "{d}/graph"], "is a folder"),
    ("export-out-suffix", ["export", "nasbnn-cifar-smallest", "-o", "{d}/m.txt"], "give a .onnx file name"),
    ("export-out-uncreatable", ["export", "nasbnn-cifar-smallest", "-o", "{d}/exists.txt/m.onnx"],
     "exists.txt"),
    ("export-no-out", ["export", "nasbnn-cifar-smallest"], "'-o'"),
    ("export-ckpt-missing", ["export", "nasbnn-cifar-smallest", "-o", "{d}/n.onnx", "--checkpoint", "{d}/no.pt"],
     "no.pt: no such checkpoint"),
    ("export-ckpt-corrupt", ["export", "nasbnn-cifar-smallest", "-o", "{d}/n.onnx", "--checkpoint",
                             "{d}/garbage.bin"], "garbage.bin"),
    ("export-ckpt-truncated", ["export", "nasbnn-cifar-smallest", "-o", "{d}/n.onnx", "--checkpoint",
                               "{d}/truncated.pt"], "truncated.pt"),
    ("export-ckpt-other-arch", ["export", "nasbnn-cifar-largest", "-o", "{d}/n.onnx", "--checkpoint",
                                "{d}/model.pt"], "holds weights of another architecture"),
    ("export-verify-range", ["export", "nasbnn-cifar-smallest", "-o", "{d}/n.onnx", "--verify", "-1"], "--verify"),
    ("export-ref-precision", ["export", "tfc-w1a1", "-o", "{d}/n.onnx", "--precision", "fixed"],
     "--precision applies to architecture specs"),
    # --- train / eval
    ("train-missing", ["train", "{d}/missing.json"], "missing.json: no such file"),
    ("train-qonnx", ["train", "{d}/tfc.onnx"], "`bnhw train` takes"),
    ("train-supernet-missing", ["train", "nasbnn-cifar-smallest", "--supernet", "{d}/no.pt", "-o", "{d}/t1"],
     "--supernet"),
    ("train-epochs", ["train", "nasbnn-cifar-smallest", "--epochs", "-1"], "--epochs"),
    ("train-data", ["train", "nasbnn-cifar-smallest", "--data", "cifar10:{d}/nothing", "-o", "{d}/t2"],
     "nothing"),
    ("train-data-kind", ["train", "nasbnn-cifar-smallest", "--data", "imagenet", "-o", "{d}/t3"],
     "unknown data source"),
    ("train-out-file", ["train", "nasbnn-cifar-smallest", "-o", "{d}/exists.txt"], "exists.txt: is an existing file"),
    ("eval-no-checkpoint", ["eval", "nasbnn-cifar-smallest"], "--checkpoint"),
    ("eval-ckpt-missing", ["eval", "nasbnn-cifar-smallest", "--checkpoint", "{d}/no.pt"], "no.pt: no such checkpoint"),
    ("eval-ckpt-corrupt", ["eval", "nasbnn-cifar-smallest", "--checkpoint", "{d}/garbage.bin"], "garbage.bin"),
    ("eval-split", ["eval", "nasbnn-cifar-smallest", "--checkpoint", "{d}/model.pt", "--split", "dev"], "--split"),
    # --- search
    ("search-budget-text", ["search", "--budget", "lots"], "lots"),
    ("search-budget-negative", ["search", "--budget", "-5M"], "-5M"),
    ("search-budget-small", ["search", "--budget", "1k", "-o", "{d}/s1"], "below the smallest subnet"),
    ("search-space", ["search", "--budget", "57M", "--space", "nope", "-o", "{d}/s2"], "nope"),
    ("search-cells-bars", ["search", "--method", "bars", "--budget", "5M", "--cells", "10", "-o", "{d}/s3"],
     "--cells applies to --method bnas only"),
    ("search-fps-no-target", ["search", "--budget", "57M", "--min-fps", "100", "-o", "{d}/s4"], "--target"),
    ("search-target", ["search", "--budget", "57M", "--target", "nope-board", "-o", "{d}/s5"], "nope-board"),
    ("search-out-file", ["search", "--budget", "57M", "-o", "{d}/exists.txt"], "exists.txt: is an existing file"),
    ("search-out-other-command", ["search", "--budget", "57M", "-o", "{d}/graph"], "{d}/graph"),
    ("search-margin", ["search", "--budget", "57M", "--margin", "1.5"], "--margin"),
    # --- report
    ("report-nothing", ["report"], "ARCHS"),
    ("report-target", ["report", "nasbnn-cifar-smallest", "--target", "nope-board", "-o", "{d}/r1"], "nope-board"),
    ("report-margin", ["report", "nasbnn-cifar-smallest", "--margin", "2", "-o", "{d}/r2"], "--margin"),
    ("report-checkpoints", ["report", "nasbnn-cifar-smallest", "--checkpoint", "-", "--checkpoint", "-",
                            "-o", "{d}/r3"], "2 --checkpoint for 1 architectures"),
    ("report-qonnx", ["report", "{d}/tfc.onnx", "-o", "{d}/r4"], "`bnhw report` takes"),
    ("report-cell", ["report", "bnas-mini-example", "-o", "{d}/r5"], "report"),
    ("report-out-plain-folder", ["report", "nasbnn-cifar-smallest", "-o", "{d}/plain"], "bnhw did not write"),
    # --- build
    ("build-target", ["build", "nasbnn-cifar-smallest", "--target", "nope-board"], "nope-board"),
    ("build-folding-missing", ["build", "tfc-w1a1", "--folding", "{d}/no-folding.json"],
     "no-folding.json: no such folding file"),
    ("build-folding-corrupt", ["build", "tfc-w1a1", "--folding", "{d}/truncated.json"],
     "truncated.json: not a JSON folding config"),
    ("build-folding-list", ["build", "tfc-w1a1", "--folding", "{d}/list.json"], "list.json: a folding config"),
    ("build-fps-and-folding", ["build", "tfc-w1a1", "--fps", "10", "--folding", "{d}/folding.json"],
     "either --folding or --fps"),
    ("build-fps-negative", ["build", "tfc-w1a1", "--fps", "-1"], "--fps must be positive"),
    ("build-margin", ["build", "tfc-w1a1", "--margin", "0"], "--margin"),
    ("build-finn-examples-spec", ["build", "nasbnn-cifar-smallest", "--folding", "finn-examples"],
     "finn-examples exists only for"),
    ("build-hw-graph", ["build", "{d}/graph/hw_graph.json"], "`bnhw build` takes"),
    ("build-finn-onnx", ["build", "{d}/finn.onnx"], "model before FINN made it dataflow nodes"),
    ("build-qonnx-not-bnn-pynq", ["build", "{d}/fc_float.onnx", "-o", "{d}/b1"], "fc_float.onnx"),
    ("build-qonnx-checkpoint", ["build", "{d}/tfc.onnx", "--checkpoint", "{d}/model.pt", "-o", "{d}/b2"],
     "carries its own weights"),
    ("build-out-file", ["build", "tfc-w1a1", "-o", "{d}/exists.txt"], "exists.txt: is an existing file"),
    ("build-out-uncreatable", ["build", "tfc-w1a1", "-o", "{d}/exists.txt/sub"], "exists.txt"),
    ("build-cell-constant-node", ["build", "{d}/cell_zero_node.json", "-o", "{d}/b3"],
     "cell 0 (normal cell) node 3 (edges 6 and 7: both zeroise"),
    ("build-csim-inputs", ["build", "tfc-w1a1", "--csim-inputs", "0"], "--csim-inputs"),
    # --- sim
    ("sim-spec", ["sim", "{d}/good.json"], "run `bnhw build` on it first"),
    ("sim-missing-npz", ["sim", "{d}/nonpz/hw_graph.json"], "hw_graph.json.npz: missing"),
    ("sim-graph-incomplete", ["sim", "{d}/broken/hw_graph.json"], "hw_graph.json: not a complete"),
    ("sim-npz-corrupt", ["sim", "{d}/badnpz/hw_graph.json"], "hw_graph.json"),
    ("sim-fifos-word", ["sim", "{d}/graph", "--fifos", "lots"], "--fifos"),
    ("sim-fifos-corrupt", ["sim", "{d}/graph", "--fifos", "{d}/truncated.json"], "truncated.json: not JSON"),
    ("sim-frames", ["sim", "{d}/graph", "--frames", "0"], "--frames"),
    # --- bench-cpu
    ("bench-corrupt-model", ["bench-cpu", "{d}/corrupt.bnhwcpu", "-o", "{d}/c1"], "corrupt.bnhwcpu"),
    ("bench-target", ["bench-cpu", "{d}/graph", "--target", "cortex-a99", "-o", "{d}/c2"], "cortex-a99"),
    ("bench-clock-native", ["bench-cpu", "{d}/graph", "--clock-mhz", "100", "-o", "{d}/c3"],
     "--clock-mhz applies to the modelled ARM targets only"),
    ("bench-checkpoint-kind", ["bench-cpu", "{d}/ckpt.pt", "-o", "{d}/c4"], "is a PyTorch checkpoint"),
    ("bench-out-other-command", ["bench-cpu", "{d}/graph", "-o", "{d}/graph"], "holds the output of `bnhw build`"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    from bnhw.quant import reference_nets as rn
    from bnhw.quant.checkpoint import save_checkpoint
    from bnhw.quant.model import BinaryNet

    d = tmp_path_factory.mktemp("bad")
    (d / "good.json").write_text(json.dumps(SPEC))
    for name, (field, value) in BAD_SPECS.items():
        (d / name).write_text(json.dumps(_spec_with(field, value)))
    cell = get_arch("bnas-mini-example").to_dict()
    cell["genotype"]["normal"][0][0] = "bin_conv_9x9"
    (d / "cell_bad_op.json").write_text(json.dumps(cell))
    cell = get_arch("bnas-mini-example").to_dict()
    cell["genotype"]["normal"][6]["op"] = "zeroise"             # node 3: zeroise + zeroise, a constant
    (d / "cell_zero_node.json").write_text(json.dumps(cell))
    (d / "empty.json").write_text("")
    (d / "garbage.bin").write_bytes(bytes(random.Random(0).randrange(256) for _ in range(512)))
    (d / "latin1.json").write_bytes(b'{"name": "caf\xe9"}')
    (d / "truncated.json").write_text(json.dumps(SPEC)[:40])
    (d / "list.json").write_text("[1, 2]")
    (d / "exists.txt").write_text("a file")
    (d / "folding.json").write_text('{"Defaults": {}}')
    (d / "plain").mkdir()
    (d / "plain" / "notes.txt").write_text("mine")
    # ONNX of each kind
    rn.export_reference(rn.build_reference("tfc-w1a1"), d / "tfc.onnx")
    (d / "onnx_named.json").write_bytes((d / "tfc.onnx").read_bytes())
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    finn = helper.make_model(helper.make_graph(
        [helper.make_node("MVAU", ["x"], ["y"], domain="finn.custom_op.fpgadataflow")], "g", [x], [y]))
    onnx.save(finn, d / "finn.onnx")
    plain = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    onnx.save(plain, d / "plain.onnx")
    xi = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    yo = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])
    q = helper.make_model(helper.make_graph(
        [helper.make_node("Quant", ["x", "s", "z", "b"], ["y"], domain="qonnx.custom_op.general", narrow=0,
                          rounding_mode="ROUND", signed=1)], "g", [xi], [yo],
        [helper.make_tensor("s", TensorProto.FLOAT, [], [1.0]), helper.make_tensor("z", TensorProto.FLOAT, [], [0.0]),
         helper.make_tensor("b", TensorProto.FLOAT, [], [4.0])]))
    onnx.save(q, d / "fc_float.onnx")
    # checkpoints and archives
    save_checkpoint(BinaryNet(get_arch("nasbnn-cifar-smallest")), d / "model.pt")
    data = (d / "model.pt").read_bytes()
    (d / "truncated.pt").write_bytes(data[: len(data) // 2])
    torch.save({"w": torch.zeros(2)}, d / "ckpt.pt")
    np.savez(d / "arrays.npz", a=np.zeros(3))
    (d / "corrupt.bnhwcpu").write_bytes(MAGIC + b"\x01" * 64)
    # hardware graphs: a good one (a build folder), one without parameters, one incomplete, one with bad npz
    g = int_graph()
    for sub in ("graph", "nonpz", "broken", "badnpz"):
        (d / sub).mkdir()
        g.save(d / sub / "hw_graph.json")
    (d / "graph" / ".bnhw.json").write_text(json.dumps({"command": "build", "complete": True}))
    (d / "nonpz" / "hw_graph.json.npz").unlink()
    broken = json.loads((d / "broken" / "hw_graph.json").read_text())
    del broken["nodes"]
    (d / "broken" / "hw_graph.json").write_text(json.dumps(broken))
    (d / "badnpz" / "hw_graph.json.npz").write_bytes(b"PK\x03\x04 not really a zip")
    return d


def test_the_table_covers_every_command_and_is_large():
    commands = {c[1][0] for c in CASES}
    assert commands >= {"ops", "sample", "export", "train", "eval", "search", "report", "build", "sim", "bench-cpu"}
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES)


def _one_line_error(r, expect: str) -> None:
    assert r.exit_code not in (0, EXIT_INTERNAL), (r.exit_code, r.output)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("error:", "Error:"))]
    assert len(errors) == 1, r.output
    assert "Traceback" not in r.output
    assert expect in errors[0], (expect, errors[0])


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_named_line(case, files, monkeypatch):
    monkeypatch.chdir(files)
    _, argv, expect = case
    argv = [a.replace("{d}", str(files)) for a in argv]
    r = CliRunner().invoke(main, argv)
    _one_line_error(r, expect.replace("{d}", str(files)))


# ----------------------------------------------------------------------------- fuzz
def _mutate_json(rng: random.Random, d):
    """One random structural mutation of a JSON value: delete, retype, replace, or go deeper."""
    if isinstance(d, dict) and d and rng.random() < 0.7:
        k = rng.choice(sorted(d))
        d = dict(d)
        r = rng.random()
        if r < 0.2:
            del d[k]
        elif r < 0.6:
            d[k] = _mutate_json(rng, d[k])
        else:
            d[k] = rng.choice([None, -1, 0, 1.5, "x", [], {}, True, 10 ** 12, "nan", [1, 2]])
        return d
    if isinstance(d, list) and d and rng.random() < 0.7:
        d = list(d)
        i = rng.randrange(len(d))
        r = rng.random()
        if r < 0.2:
            del d[i]
        elif r < 0.4:
            d.append(d[i])
        else:
            d[i] = _mutate_json(rng, d[i])
        return d
    return rng.choice([None, -3, 0, 2, 7, 1e9, "abc", [], {}, False])


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    r = rng.random()
    if r < 0.3:
        return bytes(b[: rng.randrange(len(b))])
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(b))
        b[i] = rng.randrange(256)
    return bytes(b)


def test_fuzzed_spec_json_never_ends_in_an_internal_error(tmp_path):
    """400 seeded mutations of two specs (a NAS-BNN block net, a cell net) through `bnhw ops`."""
    rng = random.Random(1234)
    bases = [SPEC, get_arch("bnas-mini-example").to_dict()]
    outcomes = {"ok": 0, "error": 0}
    for i in range(400):
        spec = bases[i % 2]
        for _ in range(rng.randint(1, 3)):
            spec = _mutate_json(rng, spec)
        text = json.dumps(spec)
        if rng.random() < 0.15:
            text = text[: rng.randrange(len(text) + 1)]
        p = tmp_path / f"f{i}.json"
        p.write_text(text)
        r = CliRunner().invoke(main, ["ops", str(p), "--totals"])
        assert r.exit_code != EXIT_INTERNAL and "Traceback" not in r.output, (text, r.output)
        if r.exit_code == 0:
            outcomes["ok"] += 1
        else:
            outcomes["error"] += 1
            assert r.output.strip().splitlines()[-1].startswith("error:"), (text, r.output)
    assert outcomes["error"] > 200            # the mutations do break specs


def test_fuzzed_onnx_bytes_never_end_in_an_internal_error(files, tmp_path):
    """150 seeded byte mutations (flips, truncations) of a QONNX file through `bnhw ops` and `bnhw build`'s
    input checks (identification, ONNX checker, lowering), which run before any output exists."""
    from bnhw.errors import BnhwError
    from bnhw.flows.inputs import Kind, identify
    from bnhw.flows.prepare import lower_qonnx_input

    rng = random.Random(99)
    data = (files / "tfc.onnx").read_bytes()
    kinds: dict[str, int] = {}
    for i in range(150):
        p = tmp_path / f"m{i}.onnx"
        p.write_bytes(_mutate_bytes(rng, data))
        r = CliRunner().invoke(main, ["ops", str(p)])
        assert r.exit_code not in (0, EXIT_INTERNAL) and "Traceback" not in r.output, r.output
        try:
            inp = identify(p)
            kinds[inp.kind.name] = kinds.get(inp.kind.name, 0) + 1
            if inp.kind is Kind.QONNX:
                lower_qonnx_input(inp)
        except BnhwError as e:
            assert "\n" not in str(e) and str(p.name) in str(e)
            kinds["error"] = kinds.get("error", 0) + 1
    assert kinds.get("error", 0) > 30 and kinds.get("QONNX", 0) > 10, kinds
