"""FINN's reference networks CNV-W1A1 / TFC-W1A1: Brevitas models, QONNX export and the FINN-style IR.

The lowered hardware graph must be bit-exact with qonnx execution of the
exported graph on real (digits) images: every bipolar activation, the input
quantiser codes, the final integer accumulators and the labels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from torch import nn

from bnhw.errors import BnhwError
from bnhw.hw.foldings import reference_folding_path
from bnhw.hw.ir import HwGraph, IRError
from bnhw.hw.lower_qonnx import lower_reference
from bnhw.quant.export import _with_batch
from bnhw.quant.reference_nets import (
    REFERENCE_NETS,
    build_reference,
    export_reference,
    load_reference_weights,
    qonnx_input,
    reference_data,
    reference_input,
    train_reference,
)

NETS = ("cnv-w1a1", "tfc-w1a1")
N_IMAGES = 16
STEPS = {"cnv-w1a1": 10, "tfc-w1a1": 30}
FOLDING_FILES = {n: reference_folding_path(n) for n in NETS}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread: these small CPU workloads run faster so on a shared, busy machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_torch_thread):
    """Briefly trained models, their QONNX exports and lowered graphs (built once per module)."""
    tmp = tmp_path_factory.mktemp("refnets")
    out = {}
    for name in NETS:
        model = train_reference(name, max_steps=STEPS[name], batch_size=32, seed=0)
        path = export_reference(model, tmp / f"{name}.onnx")
        out[name] = (model, path, lower_reference(path, name))
    return out


@pytest.fixture(scope="module")
def images():
    out = {}
    for name in NETS:
        x, y = reference_data(name, "test")
        out[name] = (x[:N_IMAGES], y[:N_IMAGES])
    return out


def _compare(graph: HwGraph, onnx_path: Path, name: str, x: torch.Tensor) -> float:
    """Assert IR == QONNX on every mapped tensor for each image of ``x``; returns QONNX accuracy helper."""
    pixels = reference_input(name, x)
    qin = qonnx_input(name, pixels)
    np.testing.assert_array_equal(qin, x.numpy())          # the digits lie on the 1/255 grid
    mw = _with_batch(ModelWrapper(str(onnx_path)), len(x))
    ctx = execute_onnx(mw, {mw.graph.input[0].name: qin}, return_full_exec_context=True)
    logits = ctx[mw.graph.output[0].name]
    mapping = graph.meta["qonnx_tensors"]
    bipolar = [s for s in mapping if graph.streams[s].dtype.is_bipolar]
    assert len(bipolar) >= (2 if name.startswith("tfc") else 10)
    assert graph.meta["final_acc"] in mapping
    for i in range(len(x)):
        env = graph.execute(pixels[i], return_all=True)
        for stream, (tensor, scale, sign) in mapping.items():
            ref = ctx[tensor][i]
            ref = ref.transpose(1, 2, 0) if ref.ndim == 3 else ref.reshape(1, 1, -1)
            ir = sign * scale * env[stream].astype(np.float64)
            assert np.array_equal(ref.astype(np.float64), ir), \
                f"image {i}: stream {stream} ({graph.producer(stream).name}) != QONNX {tensor}"
        label = int(env[graph.output].reshape(-1)[0])
        assert label == int(np.argmax(logits[i])), f"image {i}: label {label} vs QONNX {np.argmax(logits[i])}"
    return logits


@pytest.mark.parametrize("name", NETS)
def test_ir_bit_exact_with_qonnx(name, trained, images):
    _model, path, graph = trained[name]
    x, y = images[name]
    logits = _compare(graph, path, name, x)
    # the networks were trained (a little): better than chance on held-out digits
    assert (logits.argmax(1) == y.numpy()).mean() > 0.2


def _as_exported_affine(bn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x * A + B`` with qonnx BatchNormToAffine's float32 constants (what the export computes)."""
    eps = torch.tensor(bn.eps, dtype=torch.float32)
    a = bn.weight.detach() / torch.sqrt(eps + bn.running_var)
    b = bn.bias.detach() - a * bn.running_mean
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return x * a.reshape(shape) + b.reshape(shape)


@pytest.mark.parametrize("name", NETS)
def test_thresholds_exact_at_decision_boundaries(name, trained, images):
    """Batch norms moved so that image 0 hits the sign boundary exactly, about half of them with gamma < 0."""
    model0, path0, _graph = trained[name]
    model = build_reference(name)
    model.load_state_dict(model0.state_dict())
    model.eval()
    x, _ = images[name]
    g = torch.Generator().manual_seed(1)
    bns = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    seen: dict[int, torch.Tensor] = {}

    def hook(m, inp, _out):
        seen[id(m)] = inp[0].detach()
        return _as_exported_affine(m, inp[0])

    handles = [bn.register_forward_hook(hook) for bn in bns]
    try:
        for bn in bns:  # in order: each boundary is set on what the earlier (already moved) layers give
            with torch.no_grad():
                model(x[:1])
            v = seen[id(bn)][0].reshape(bn.num_features, -1)     # image 0: C x pixels
            pick = torch.randint(0, v.shape[1], (v.shape[0],), generator=g)
            with torch.no_grad():
                bn.running_mean.copy_(v[torch.arange(v.shape[0]), pick])
                bn.running_var.copy_(torch.rand(v.shape[0], generator=g) * 2 + 0.25)
                sign = torch.where(torch.rand(v.shape[0], generator=g) < 0.5, -1.0, 1.0)
                bn.weight.copy_(sign * (torch.rand(v.shape[0], generator=g) + 0.5))
                bn.bias.zero_()
    finally:
        for h in handles:
            h.remove()
    path = export_reference(model, Path(path0).with_name(f"{name}-boundary.onnx"))
    graph = lower_reference(path, name)
    # image 0 sits exactly on the threshold of most channels of every thresholded layer
    env = graph.execute(reference_input(name, x[:1])[0], return_all=True)
    for n in graph.nodes:
        if n.op == "MVAU" and "thresholds" in n.params:
            acc = env[n.inputs[0]].reshape(-1, n.attrs["MW"]) @ n.params["weights"].T
            hits = (acc == n.params["thresholds"][:, 0]).any(axis=0).mean()
            assert hits > 0.9, f"{n.name}: only {hits:.0%} of the channels on the boundary"
    # the rows of negative-gamma channels are negated (FINN's sign factoring)
    w = next(m for m in model.modules() if hasattr(m, "weight_quant")).weight.detach().numpy()
    w = np.where(w >= 0, 1, -1)
    w = w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1) if w.ndim == 4 else w
    rows_sign = (graph.node("MVAU_hls_0").params["weights"] * w).mean(axis=1)
    assert set(np.unique(rows_sign)) == {-1, 1}
    _compare(graph, path, name, x)


def test_lowering_from_model_matches_file(trained):
    model, _path, graph = trained["tfc-w1a1"]
    again = lower_reference(model, "tfc-w1a1")
    assert [n.name for n in again.nodes] == [n.name for n in graph.nodes]
    for a, b in zip(again.nodes, graph.nodes):
        assert a.attrs == b.attrs
        assert a.params.keys() == b.params.keys()
        for k in a.params:
            np.testing.assert_array_equal(a.params[k], b.params[k])


@pytest.mark.parametrize("name", NETS)
def test_finn_folding_applies(name, trained):
    graph = trained[name][2]
    folding = json.loads(FOLDING_FILES[name].read_text())
    folded = graph.with_folding(folding)                   # raises on unknown node names
    for node_name, cfg in folding.items():
        if node_name == "Defaults":
            continue
        n = folded.node(node_name)
        assert n.pe == cfg.get("PE", 1) and n.simd == cfg.get("SIMD", 1)
    mvau = [n for n in folded.nodes if n.op == "MVAU"]
    for n in mvau:  # PE divides MH and SIMD divides MW, as FINN requires
        assert n.attrs["MH"] % n.pe == 0 and n.attrs["MW"] % n.simd == 0
    with pytest.raises(IRError):
        graph.with_folding({"MVAU_hls_99": {"PE": 1}})


def test_cnv_structure(trained):
    g = trained["cnv-w1a1"][2]
    names = [n.name for n in g.nodes]
    assert names == (["Thresholding_rtl_0"]
                     + [f"{p}_{i}" for i in range(2) for p in ("ConvolutionInputGenerator_rtl", "MVAU_hls")]
                     + ["StreamingMaxPool_hls_0"]
                     + [f"{p}_{i}" for i in range(2, 4) for p in ("ConvolutionInputGenerator_rtl", "MVAU_hls")]
                     + ["StreamingMaxPool_hls_1"]
                     + [f"{p}_{i}" for i in range(4, 6) for p in ("ConvolutionInputGenerator_rtl", "MVAU_hls")]
                     + ["MVAU_hls_6", "MVAU_hls_7", "MVAU_hls_8", "LabelSelect_hls_0"])
    mvau = [n for n in g.nodes if n.op == "MVAU"]
    shapes = [(n.attrs["MW"], n.attrs["MH"], g.out_stream(n).pixels) for n in mvau]
    assert shapes == [(27, 64, 900), (576, 64, 784), (576, 128, 144), (1152, 128, 100), (1152, 256, 9),
                      (2304, 256, 1), (256, 512, 1), (512, 512, 1), (512, 10, 1)]
    for n in mvau:
        assert n.params["weights"].shape == (n.attrs["MH"], n.attrs["MW"])
        assert set(np.unique(n.params["weights"])) <= {-1, 1}
    assert [n.attrs["binary_xnor"] for n in mvau] == [False] + [True] * 8
    assert all("thresholds" in n.params for n in mvau[:-1]) and "thresholds" not in mvau[-1].params
    assert g.streams[g.input].dtype.finn_name() == "UINT8" and g.streams[g.input].shape == (32, 32, 3)
    t0 = g.node("Thresholding_rtl_0")
    assert g.out_stream(t0).dtype.finn_name() == "INT8" and t0.params["thresholds"].shape == (3, 255)
    assert g.out_stream(g.node("MVAU_hls_0")).dtype.is_bipolar
    assert g.out_stream(mvau[-1]).dtype.finn_name() == "INT11"   # |acc| <= 512


def test_tfc_structure(trained):
    g = trained["tfc-w1a1"][2]
    assert [n.name for n in g.nodes] == (["Thresholding_rtl_0"] + [f"MVAU_hls_{i}" for i in range(4)]
                                         + ["LabelSelect_hls_0"])
    mvau = [n for n in g.nodes if n.op == "MVAU"]
    assert [(n.attrs["MW"], n.attrs["MH"], g.out_stream(n).pixels) for n in mvau] == \
        [(784, 64, 1), (64, 64, 1), (64, 64, 1), (64, 10, 1)]
    assert all(n.attrs["binary_xnor"] for n in mvau)
    t0 = g.node("Thresholding_rtl_0")
    assert g.streams[g.input].shape == (1, 1, 784) and g.out_stream(t0).dtype.is_bipolar
    # 2 * (p / 255) - 1 >= 0  <=>  p >= 128 (in float32 too)
    assert np.all(t0.params["thresholds"] == 128)


def test_input_helpers():
    x, _ = reference_data("cnv-w1a1", "test")
    p = reference_input("cnv-w1a1", x[:3])
    assert p.shape == (3, 32, 32, 3) and p.min() >= 0 and p.max() <= 255
    np.testing.assert_array_equal(qonnx_input("cnv-w1a1", p), x[:3].numpy())
    xt, _ = reference_data("tfc-w1a1", "test")
    pt = reference_input("tfc-w1a1", xt[:2])
    assert pt.shape == (2, 1, 1, 784)
    np.testing.assert_array_equal(pt[1, 0, 0], np.rint(xt[1, 0].numpy().reshape(-1) * 255))
    with pytest.raises(ValueError):
        reference_input("cnv-w1a1", xt[:2])
    with pytest.raises(BnhwError):
        build_reference("lfc-w1a1")
    assert set(REFERENCE_NETS) == set(NETS)


def test_load_local_weights(tmp_path, trained):
    model = trained["tfc-w1a1"][0]
    f = tmp_path / "tfc.pth"
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, f)   # BNN-PYNQ trainer layout
    fresh = build_reference("tfc-w1a1", state_dict=f)
    other = load_reference_weights(build_reference("tfc-w1a1", seed=9), f)
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v) and torch.equal(other.state_dict()[k], v)
    torch.save({"features.2.weight": torch.zeros(3, 3)}, tmp_path / "bad.pth")
    with pytest.raises(BnhwError):
        build_reference("tfc-w1a1", state_dict=tmp_path / "bad.pth")
    with pytest.raises(BnhwError):
        build_reference("tfc-w1a1", state_dict=tmp_path / "missing.pth")


def test_training_is_deterministic():
    a = train_reference("tfc-w1a1", max_steps=3, seed=5)
    b = train_reference("tfc-w1a1", max_steps=3, seed=5)
    for k, v in a.state_dict().items():
        assert torch.equal(b.state_dict()[k], v), k


def test_quick_training_is_kept_and_reused(tmp_path, monkeypatch):
    """Without --checkpoint a reference net is trained once per machine: the second build loads the same
    weights (identical outputs) and says so; a damaged cache entry is retrained, not an error."""
    from bnhw.flows.prepare import reference_model

    monkeypatch.setenv("BNHW_WEIGHTS_CACHE", str(tmp_path))
    said: list[str] = []
    a, _ = reference_model("tfc-w1a1", None, echo=said.append)
    b, notes = reference_model("tfc-w1a1", None, echo=said.append)
    assert "training tfc-w1a1" in said[0] and "as trained earlier here" in said[1]
    assert any(str(tmp_path) in n for n in notes)
    x, _ = reference_data("tfc-w1a1", "test")
    a.eval()
    b.eval()
    with torch.no_grad():
        assert torch.equal(a(x[:32]), b(x[:32]))
    (f,) = tmp_path.glob("tfc-w1a1-*.pt")
    f.write_bytes(b"\x00damaged")
    c, _ = reference_model("tfc-w1a1", None, echo=said.append)
    assert "training tfc-w1a1" in said[2]
    c.eval()
    with torch.no_grad():
        assert torch.equal(a(x[:32]), c(x[:32]))
