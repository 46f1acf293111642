"""The hls4ml back end (``bnhw build --backend hls4ml``, :mod:`bnhw.hw.hls4ml_backend`).

* The hls4ml 1.3.0 defects bnhw works around, each reproduced with plain hls4ml on a minimal binary QONNX model
  (docs/HLS4ML_DEFECTS.md); each test asserts the defect is still there and, when it fails, says which part of
  bnhw's pass to drop.
* TFC-W1A1 (weights and batch norms off their defaults, negative BN scales included) converted by hls4ml, fixed by
  bnhw's pass, C-simulated with hls4ml's compile() + predict() bit for bit against the IR on real digits images.
* The CLI: a QONNX file built with ``--backend hls4ml``; an unknown back end; the refusal of nets hls4ml can't take.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bnhw.cli import main
from bnhw.hw import hls4ml_backend as hb

pytestmark = pytest.mark.skipif(bool(hb.hls4ml_unavailable_reason()), reason=hb.hls4ml_unavailable_reason() or "-")

# ----------------------------------------------------------------------------- the defects, with plain hls4ml
#: 4 inputs, 3 outputs; column 0: all +1 weights, threshold 0.5 (defect 2); column 1: mixed weights, threshold 0
#: (defect 1); column 2: all +1 weights, BN scale -1, bias -1 (defect 3: acc <= -1, hls4ml: acc >= -1).  Each column shows one defect on its own.
TINY_W = np.array([[1, 1, 1], [1, -1, 1], [1, 1, 1], [1, -1, 1]], dtype=np.float32)
TINY_SCALE = np.array([1.0, 1.0, -1.0], dtype=np.float32)
TINY_BIAS = np.array([-0.5, 0.0, -1.0], dtype=np.float32)
TINY_X = np.array([[int(c) for c in f"{i:04b}"] for i in range(16)], dtype=np.float64)   # every 4-bit input


def tiny_bnn(path, w=TINY_W, scale=TINY_SCALE, bias=TINY_BIAS) -> None:
    """x (1, n) in {0, 1} -> BipolarQuant(2x - 1) -> MatMul(BipolarQuant(w)) -> * scale + bias -> BipolarQuant:
    the pattern of bnhw's (and Brevitas') binary QONNX, at the smallest size."""
    import onnx
    from onnx import TensorProto, helper
    from onnx import numpy_helper as nh

    n, m = w.shape
    dom = "qonnx.custom_op.general"
    inits = [nh.from_array(np.float32(2.0), "two"), nh.from_array(np.float32(1.0), "one"),
             nh.from_array(np.asarray(w, np.float32), "w"),
             nh.from_array(np.asarray(scale, np.float32).reshape(1, m), "scale"),
             nh.from_array(np.asarray(bias, np.float32).reshape(1, m), "bias")]
    nodes = [helper.make_node("Mul", ["x", "two"], ["x2"]), helper.make_node("Sub", ["x2", "one"], ["xc"]),
             helper.make_node("BipolarQuant", ["xc", "one"], ["xb"], domain=dom),
             helper.make_node("BipolarQuant", ["w", "one"], ["wb"], domain=dom),
             helper.make_node("MatMul", ["xb", "wb"], ["acc"]),
             helper.make_node("Mul", ["acc", "scale"], ["a1"]), helper.make_node("Add", ["a1", "bias"], ["a2"]),
             helper.make_node("BipolarQuant", ["a2", "one"], ["y"], domain=dom)]
    g = helper.make_graph(nodes, "tiny_bnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, m])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(dom, 1)]), path)


def tiny_expected() -> np.ndarray:
    """QONNX's semantics of :func:`tiny_bnn` (BipolarQuant: x >= 0 -> +1), as 0 / 1 (hls4ml's output)."""
    acc = (2 * TINY_X - 1) @ TINY_W.astype(np.float64)
    return (acc * TINY_SCALE + TINY_BIAS >= 0).astype(np.int64)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny model converted by plain hls4ml (nothing of bnhw's), compiled and run on every input."""
    d = tmp_path_factory.mktemp("tiny")
    tiny_bnn(d / "tiny.onnx")
    hm = hb.plain_convert(d / "tiny.onnx", d / "prj")
    hm.compile()
    got = np.asarray(hm.predict(np.ascontiguousarray(TINY_X))).reshape(len(TINY_X), -1).astype(np.int64)
    return hm, got


def test_tiny_model_semantics_match_qonnx(tmp_path):
    """The expected outputs of the defect tests are QONNX's own execution of the tiny model."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.util.cleanup import cleanup_model

    tiny_bnn(tmp_path / "t.onnx")
    mw = cleanup_model(ModelWrapper(str(tmp_path / "t.onnx")))
    i, o = mw.graph.input[0].name, mw.graph.output[0].name
    q = np.stack([execute_onnx(mw, {i: x[None].astype(np.float32)})[o][0] for x in TINY_X])
    assert np.array_equal((q > 0).astype(np.int64), tiny_expected())


DROP = "hls4ml seems to have fixed it upstream: drop this part of bnhw's pass (bnhw/hw/hls4ml_backend.py, DEFECTS[{}]) " \
       "and docs/HLS4ML_DEFECTS.md #{}"


def test_defect_1_binary_weights_requantized_to_ones(tiny):
    hm, got = tiny
    dense = next(lay for lay in hm.get_layers() if lay.class_name == "Dense")
    w = np.asarray(dense.weights["weight"].data)
    still = bool((w == 1).all()) and (TINY_W < 0).any()
    assert still, DROP.format(0, 1)
    # and it changes the answer: column 1's mixed weights act as all +1
    assert not np.array_equal(got[:, 1], tiny_expected()[:, 1]), DROP.format(0, 1)


def test_defect_2_binary_thresholds_floored(tiny):
    hm, got = tiny
    act = [lay for lay in hm.get_layers() if lay.class_name == "BatchNormalizationQuantizedTanh"][-1]
    t = np.asarray(act.weights["threshold"].data).reshape(-1)
    assert t[0] == np.floor(0.5), DROP.format(1, 2)           # should be ceil(0.5) = 1 on an integer acc
    assert not np.array_equal(got[:, 0], tiny_expected()[:, 0]), DROP.format(1, 2)


def test_defect_3_negative_bn_scale_not_flipped(tiny):
    """x * s + b >= 0 with s < 0 is x <= -b / s; hls4ml compares x >= -b / s (column 2: all +1 weights, so
    defect 1 does not touch it, and an integer threshold, so defect 2 does not either)."""
    _, got = tiny
    want = tiny_expected()[:, 2]
    assert not np.array_equal(got[:, 2], want), DROP.format(2, 3)
    assert np.array_equal(got[:, 2], 1 - want), DROP.format(2, 3)     # exactly the opposite comparison


# ----------------------------------------------------------------------------- the conv defects
def tiny_conv(path) -> None:
    """x (1, 4, 5, 5) -> BipolarQuant(2x - 1) -> 3x3 Conv(BipolarQuant(w), 4 -> 4 channels: fan-in 36) ->
    per-channel * scale + bias -> BipolarQuant: one binary conv layer of a BNN-PYNQ-style QONNX."""
    import onnx
    from onnx import TensorProto, helper
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(0)
    dom = "qonnx.custom_op.general"
    inits = [nh.from_array(np.float32(2.0), "two"), nh.from_array(np.float32(1.0), "one"),
             nh.from_array(rng.choice([-1.0, 1.0], (4, 4, 3, 3)).astype(np.float32), "w"),
             nh.from_array(rng.uniform(0.5, 1.5, (1, 4, 1, 1)).astype(np.float32), "scale"),
             nh.from_array(rng.uniform(-3, 3, (1, 4, 1, 1)).astype(np.float32), "bias")]
    nodes = [helper.make_node("Mul", ["x", "two"], ["x2"]), helper.make_node("Sub", ["x2", "one"], ["xc"]),
             helper.make_node("BipolarQuant", ["xc", "one"], ["xb"], domain=dom),
             helper.make_node("BipolarQuant", ["w", "one"], ["wb"], domain=dom),
             helper.make_node("Conv", ["xb", "wb"], ["acc"], kernel_shape=[3, 3], pads=[0, 0, 0, 0], dilations=[1, 1], group=1,
                              strides=[1, 1]),
             helper.make_node("Mul", ["acc", "scale"], ["a1"]), helper.make_node("Add", ["a1", "bias"], ["a2"]),
             helper.make_node("BipolarQuant", ["a2", "one"], ["y"], domain=dom)]
    g = helper.make_graph(nodes, "tiny_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3, 3])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(dom, 1)]), path)


@pytest.fixture(scope="module")
def conv_onnx(tmp_path_factory):
    d = tmp_path_factory.mktemp("conv")
    tiny_conv(d / "conv.onnx")
    return d


def test_qonnx_channels_last_leaves_transposes_around_bipolarquant(conv_onnx):
    """Not hls4ml's: qonnx's ConvertToChannelsLastAndClean does not move Transposes through BipolarQuant."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.util.cleanup import cleanup_model

    m = cleanup_model(ModelWrapper(str(conv_onnx / "conv.onnx"))).transform(ConvertToChannelsLastAndClean())
    feeds = {i for n in m.graph.node if n.op_type == "BipolarQuant" for i in n.input}
    assert any(n.op_type == "Transpose" and n.output[0] in feeds for n in m.graph.node), \
        "qonnx now moves Transposes through BipolarQuant: drop that part of hls4ml_backend.channels_last_qonnx"
    left = [n for n in hb.channels_last_qonnx(conv_onnx / "conv.onnx").graph.node if n.op_type == "Transpose"]
    assert not left                                           # bnhw's preparation removes them


def test_defect_4_four_d_constants_not_broadcast(conv_onnx):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.util.cleanup import cleanup_model

    m = cleanup_model(cleanup_model(ModelWrapper(str(conv_onnx / "conv.onnx")))
                      .transform(ConvertToChannelsLastAndClean()))
    with pytest.raises(ValueError, match="more dimensions than allowed"):
        hb.plain_convert(m, conv_onnx / "p4", io_type="io_stream")


@pytest.fixture(scope="module")
def conv_plain(conv_onnx):
    """The tiny conv after bnhw's ONNX preparation (defect 4 and the Transposes worked around) but none of bnhw's
    hls4ml pass."""
    return hb.plain_convert(hb.channels_last_qonnx(conv_onnx / "conv.onnx"), conv_onnx / "p5", io_type="io_stream")


def test_defect_5_io_stream_binary_activation_after_conv_does_not_compile(conv_plain):
    act = next(lay for lay in conv_plain.get_layers() if lay.class_name == "BatchNormalizationQuantizedTanh"
               and lay.get_input_node().class_name == "Conv2D")
    assert act.get_attr("n_filt") == -1, DROP.format(4, 5)    # a threshold per pixel
    with pytest.raises(Exception, match="Failed to compile"):
        conv_plain.compile()


def test_defect_6_conv_accumulator_too_narrow(conv_plain):
    conv = next(lay for lay in conv_plain.get_layers() if lay.class_name == "Conv2D")
    p = conv.get_output_variable().type.precision
    fan_in = 3 * 3 * 4                                        # the +-1 dot product spans -36 .. 36
    assert p.integer - int(p.signed) < int(fan_in).bit_length(), DROP.format(5, 6)


# ----------------------------------------------------------------------------- TFC-W1A1, bit-exact
@pytest.fixture(scope="module")
def tfc(tmp_path_factory):
    """TFC-W1A1 with random weights and batch norms off their defaults (negative scales too), its QONNX and IR."""
    from bnhw.hw.lower_qonnx import lower_reference
    from bnhw.quant import reference_nets as rn

    d = tmp_path_factory.mktemp("tfc")
    torch.manual_seed(0)
    model = rn.build_reference("tfc-w1a1")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                c = m.num_features
                m.weight.copy_((torch.rand(c, generator=g) + 0.5) * torch.where(torch.rand(c, generator=g) < 0.2,
                                                                                -1.0, 1.0))
                m.bias.copy_(torch.randn(c, generator=g) * 0.5)
                m.running_mean.copy_(torch.randn(c, generator=g) * 4)
                m.running_var.copy_(torch.rand(c, generator=g) * 20 + 1)
    model.eval()
    onnx = d / "tfc.onnx"
    rn.export_reference(model, onnx)
    graph = lower_reference(onnx, "tfc-w1a1")
    x, _ = rn.reference_data("tfc-w1a1", "test")
    ints = rn.reference_input("tfc-w1a1", x)[:16]
    return d, onnx, graph, ints


def test_tfc_csim_bit_exact_with_the_ir(tfc):
    d, onnx, graph, ints = tfc
    proj = hb.convert(onnx, graph, d / "hls4ml", project_name="tfc")
    assert (d / "hls4ml" / "hls4ml_config.yml").is_file()
    assert len(proj.fixed) == 5                               # the input quantiser and the four Dense layers
    res = hb.csim_compare(proj, graph, ints)
    assert res["line"] == "C simulation: 16 images, bit-exact", res["line"]
    assert res["images_equal"] == 16
    # the class scores are not constant (defect 1 would make them so), and the labels vary over the images
    got = np.asarray(proj.model.predict(np.ascontiguousarray(ints.reshape(16, -1).astype(np.float64))))
    assert len({tuple(r) for r in got.reshape(16, -1)}) > 1
    # a wrong threshold is named as the first differing layer
    act = [lay for lay in proj.model.get_layers() if lay.class_name == "BatchNormalizationQuantizedTanh"][2]
    act.weights["threshold"].data = act.weights["threshold"].data + 1000
    proj.model.write()
    line = hb.first_differing_layer(proj, graph, ints[0])
    assert line.startswith(f"{act.name} (IR MVAU_hls_1)"), line


# ----------------------------------------------------------------------------- CLI
def test_cli_build_qonnx_with_hls4ml(tfc, tmp_path):
    _, onnx, _, _ = tfc
    out = tmp_path / "b"
    r = CliRunner().invoke(main, ["build", str(onnx), "--backend", "hls4ml", "-o", str(out), "--csim-inputs", "16"])
    assert r.exit_code == 0, r.output
    assert "C simulation: 16 images, bit-exact" in r.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["backend"] == "hls4ml" and rep["hls4ml"]["csim"]["bit_exact"] is True
    assert "hls4ml 1.3.0 has no resource or latency model" in (out / "report.md").read_text()
    cfg = (out / "hls4ml" / "hls4ml_config.yml").read_text()
    assert f"OutputDir: {(out / 'hls4ml').resolve()}" in cfg     # the final folder, not the staging one


def test_cli_unknown_backend_lists_the_known_ones():
    r = CliRunner().invoke(main, ["build", "tfc-w1a1", "--backend", "vivado"])
    assert r.exit_code != 0
    assert r.output.strip().splitlines()[-1] == "error: --backend 'vivado': unknown back end; known: finn, hls4ml"


def test_cli_folding_is_not_for_hls4ml():
    r = CliRunner().invoke(main, ["build", "tfc-w1a1", "--backend", "hls4ml", "--fps", "1000"])
    assert r.exit_code != 0
    assert r.output.strip().splitlines()[-1].startswith("error: --fps: a folding of the finn back end")


@pytest.mark.parametrize("make", ["bin_graph", "bireal_graph", "int_graph"])
def test_refusal_names_the_layer(make):
    from helpers import graphs

    why = hb.supported_graph_error(getattr(graphs, make)())
    assert why and "\n" not in why
    assert why.split(" ")[0] in {n.name for n in getattr(graphs, make)().nodes}
