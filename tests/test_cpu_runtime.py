"""The C runtime executes lowered networks bit-exactly: against ``HwGraph.execute`` on every stream it
keeps (every node kind and corner case, hundreds of random convolutions), against QONNX execution of
a searched-space subnet and of CNV-W1A1 on real digit images, with every kernel set, in process
(ctypes), as the standalone ``bnhw-run`` natively, and cross-built for ARMv7 / AArch64 under QEMU."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess

import numpy as np
import pytest
from helpers.graphs import (
    Builder,
    add_mvau,
    bin_graph,
    bipolar_w,
    bireal_graph,
    cell_graph,
    cnv_graph,
    cnv_w1a1_graph,
    int_graph,
    rand_input,
    requant_graph,
    rprelu_gap_graph,
    swg,
    ties_graph,
)
from helpers.qemu_x86 import OLDER_X86, qemu_x86
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx

from bnhw.errors import BnhwError
from bnhw.hw.cpu.cross import toolchain_status
from bnhw.hw.cpu.program import CpuLoweringError, lower_cpu, write_model
from bnhw.hw.cpu.runtime import CpuModel, default_threads, run_standalone, usable_kernel_sets
from bnhw.hw.ir import DType, HwGraph

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc (apt-get install gcc)")

N_IMAGES = 8


def kernel_sets() -> list[str]:
    """Every compiled-in set this CPU runs (test_cpu_kernels names, with the reason, any it lacks)."""
    return usable_kernel_sets()


def check_all_streams(g: HwGraph, model: CpuModel, xs: np.ndarray) -> int:
    """Assert that every stream the runtime keeps equals the reference; returns the number compared."""
    compared = 0
    for i, x in enumerate(xs):
        env = g.execute(x, return_all=True)
        got = model.run_all(x)
        assert got, "the runtime exposes no streams"
        for s, v in got.items():
            assert np.array_equal(v, env[s]), f"image {i}: stream {s} ({g.producer(s).name if g.producer(s) else 'input'}) differs"
            compared += 1
        np.testing.assert_array_equal(model.run(x), env[g.output])
    return compared


# ----------------------------------------------------------------------------- hand-built graphs
GRAPHS = {"int": int_graph, "bin": bin_graph, "bireal": bireal_graph, "cnv_logits": lambda: cnv_graph(labels=False),
          "cnv": cnv_graph, "cnv_w1a1": cnv_w1a1_graph, "ties": ties_graph, "requant": requant_graph,
          "rprelu_gap": rprelu_gap_graph, "cell": cell_graph}


@pytest.mark.parametrize("name", list(GRAPHS))
def test_every_node_kind_bit_exact(name):
    g = GRAPHS[name]()
    x = rand_input(g, 4, seed=11)
    for ks in kernel_sets():
        n = check_all_streams(g, CpuModel(g, kernels=ks), x)
        assert n >= 4 * len([s for s in g.streams if "window" not in s]) // 2


def random_conv_graph(rng: np.random.Generator) -> HwGraph:
    """A sign Thresholding, an SWG (or none for 1x1) and an XNOR MVAU of random shape: odd channel
    counts, groups whose channels are not a multiple of 64, deep fan-ins, every padding value, stride,
    dilation, and every output kind (accumulator, packed sign, multi-threshold)."""
    C = int(rng.choice([1, 3, 7, 12, 31, 63, 64, 65, 96, 127, 130, 200]))
    gs = [d for d in (1, 2, 3, 4, 8, 16) if C % d == 0]
    groups = int(rng.choice(gs))
    og = int(rng.integers(1, 9))
    cout = groups * og
    k = int(rng.choice([1, 1, 2, 3, 3, 5, 7, 9]))
    pad = int(rng.integers(0, k // 2 + 1)) if k > 1 else 0
    stride, dil = int(rng.integers(1, 3)), int(rng.choice([1, 1, 2])) if k > 1 else 1
    span = dil * (k - 1) + 1
    H = int(rng.integers(max(1, span - 2 * pad), span - 2 * pad + 8))
    W = int(rng.integers(max(1, span - 2 * pad), span - 2 * pad + 8))
    b = Builder("rconv", (H, W, C), DType.int_(6))
    x = b.add("Thresholding", "x", (H, W, C), DType.bipolar(), {"out_bias": -1, "out_scale": 2},
              {"thresholds": rng.integers(-8, 8, (C, 1))})
    if k > 1 or stride > 1 or pad:
        x = swg(b, x, k, pad=pad, stride=stride, dil=dil, pad_value=int(rng.choice([0, 0, 1, -1])))
    fan = k * k * C // groups
    w = bipolar_w(rng, (cout, fan))
    mode = rng.integers(0, 3)
    if mode == 0:
        y = add_mvau(b, x, w, groups=groups, channels=C)
    elif mode == 1:
        y = add_mvau(b, x, w, groups=groups, channels=C, thresholds=rng.integers(-fan, fan + 1, (cout, 1)),
                     out_bias=-1, out_scale=2)
        y = add_mvau(b, y, bipolar_w(rng, (3, cout)))              # read the packed output back
    else:
        t = np.sort(rng.integers(-fan, fan + 1, (cout, 3)), axis=1)
        y = add_mvau(b, x, w, groups=groups, channels=C, thresholds=t, out_bias=-1, out_scale=1)
    return b.graph(y)


def test_random_convolutions_bit_exact():
    rng = np.random.default_rng(2026)
    sets = kernel_sets()
    shapes = 0
    for _ in range(150):
        g = random_conv_graph(rng)
        x = rand_input(g, 2, seed=int(rng.integers(1 << 30)))
        for ks in sets:
            check_all_streams(g, CpuModel(g, kernels=ks), x)
        shapes += 1
    assert shapes == 150 and "portable" in sets


def tap_rows_conv_graph(rng: np.random.Generator, stride: int) -> HwGraph:
    """A binary conv the runtime runs by tap rows (groups 1-2 words deep, at most 32 channels a group, 16 or
    more output pixels a row, no dilation; stride 2 only one group without padding, read in place):
    every padding value, 1-8 groups, odd channel counts, every output kind, 1-3 output rows."""
    if stride == 2:
        C, groups, pad = int(rng.choice([3, 12, 64, 65, 127])), 1, 0
    else:
        C = int(rng.choice([1, 3, 7, 12, 24, 31, 64, 65, 96, 127]))
        groups = int(rng.choice([d for d in (1, 2, 3, 4, 8) if C % d == 0]))
    og = int(rng.choice([1, 3, 6, 12, 17, 32]))
    cout, k = groups * og, int(rng.choice([2, 3, 3, 5]))
    if stride == 1:
        pad = int(rng.integers(0, k // 2 + 1))
    H = k - 2 * pad + int(rng.integers(0, 3))
    W = (15 + int(rng.integers(0, 6))) * stride + k - 2 * pad
    b = Builder("tapconv", (H, W, C), DType.int_(6))
    x = b.add("Thresholding", "x", (H, W, C), DType.bipolar(), {"out_bias": -1, "out_scale": 2},
              {"thresholds": rng.integers(-8, 8, (C, 1))})
    x = swg(b, x, k, pad=pad, stride=stride, pad_value=int(rng.choice([0, 1, -1])))
    fan = k * k * C // groups
    mode = rng.integers(0, 3)
    if mode == 0:
        y = add_mvau(b, x, bipolar_w(rng, (cout, fan)), groups=groups, channels=C)
    elif mode == 1:
        y = add_mvau(b, x, bipolar_w(rng, (cout, fan)), groups=groups, channels=C,
                     thresholds=rng.integers(-fan, fan + 1, (cout, 1)), out_bias=-1, out_scale=2)
    else:
        y = add_mvau(b, x, bipolar_w(rng, (cout, fan)), groups=groups, channels=C,
                     thresholds=np.sort(rng.integers(-fan, fan + 1, (cout, 3)), axis=1), out_bias=-1, out_scale=1)
    return b.graph(y)


def test_tap_row_convolutions_bit_exact():
    """Convolutions the runtime runs by tap rows (bgemm_small reading window rows in place, no im2col)
    equal the IR with every kernel set, split over 1-3 threads (pixel chunks starting mid-row), and over
    40 threads (fewer pixels than threads: channel slices across groups)."""
    rng = np.random.default_rng(2212)
    sets = kernel_sets()
    for i in range(24):
        g = tap_rows_conv_graph(rng, stride=2 if i % 6 == 5 else 1)
        x = rand_input(g, 2, seed=int(rng.integers(1 << 30)))
        for ks in sets:
            check_all_streams(g, CpuModel(g, kernels=ks), x)
        for t in (2, 3):
            check_all_streams(g, CpuModel(g, threads=t, split_threshold=0), x)
    b = Builder("tap_slices", (3, 18, 96), DType.bipolar())
    y = add_mvau(b, swg(b, "x", 3, pad=0), bipolar_w(rng, (96, 9 * 96 // 4)), groups=4, channels=96)
    g = b.graph(y)
    check_all_streams(g, CpuModel(g, threads=40, split_threshold=0), rand_input(g, 2, seed=4))


def test_deep_fan_in_counts_exactly():
    """A 3x3 conv over 2048 channels (18432-bit dot products, all-equal inputs and weights: the count
    reaches its extremes) and zero padding at every border."""
    b = Builder("deep", (3, 3, 2048), DType.bipolar())
    w = swg(b, "x", 3, pad=1)
    y = add_mvau(b, w, np.ones((4, 9 * 2048), dtype=np.int64))
    g = b.graph(y)
    for ks in kernel_sets():
        m = CpuModel(g, kernels=ks)
        for v in (1, -1):
            out = m.run(np.full((3, 3, 2048), v))
            np.testing.assert_array_equal(out, g.execute(np.full((3, 3, 2048), v)))
            assert out[1, 1, 0] == v * 9 * 2048 and out[0, 0, 0] == v * 4 * 2048


# ----------------------------------------------------------------------------- lowering checks and errors
def test_program_fuses_windows_and_aliases_duplicates():
    g = bireal_graph()
    p = lower_cpu(g)
    ops = [o.op for o in p.ops]
    assert "SWG" not in " ".join(o.name for o in p.ops if o.op != "BCONV")
    assert ops.count("BCONV") == sum(1 for n in g.nodes if n.op == "MVAU" and n.attrs.get("binary_xnor"))
    dup = next(n for n in g.nodes if n.op == "Duplicate")
    assert len({p.stream_tensor[s] for s in dup.inputs + dup.outputs}) == 1
    conv = next(o for o in p.ops if o.op == "BCONV" and o.attrs["k"] == 3)
    assert conv.nodes[0].startswith("SWG") and conv.nodes[1].startswith("MVAU")
    assert conv.bmacs == 4 * 4 * 8 * 9 * 4                     # Ho Wo Cout k k C/groups


def test_unsupported_graph_names_the_node():
    b = Builder("bad", (4, 4, 2), DType.int_(4))
    w = swg(b, "x", 3, pad=1)
    y = b.add("MaxPool", w, (2, 2, 18), b.dtype(w), {"k": 2})
    with pytest.raises(CpuLoweringError, match="SWG_0.*exactly one MVAU"):
        lower_cpu(b.graph(y))


def test_corrupt_or_foreign_model_files_are_one_line_errors(tmp_path):
    g = bin_graph()
    path = write_model(g, tmp_path / "m.bnhwcpu")
    data = path.read_bytes()
    (tmp_path / "short").write_bytes(data[: len(data) // 2])
    with pytest.raises(BnhwError, match="corrupt") as e:
        CpuModel(tmp_path / "short")
    assert "\n" not in str(e.value)
    (tmp_path / "foreign").write_bytes(b"PK\x03\x04" + data)
    with pytest.raises(BnhwError, match="not a bnhw CPU model"):
        CpuModel(tmp_path / "foreign")
    m = CpuModel(path)
    with pytest.raises(BnhwError, match="input has 3 elements"):
        m.run(np.ones(3))
    with pytest.raises(BnhwError, match="kernel set nonesuch") as e:
        m.kernels = "nonesuch"
    assert "\n" not in str(e.value)
    absent = "neon" if platform.machine().lower() in ("x86_64", "amd64") else "avx2"
    with pytest.raises(BnhwError, match=f"kernel set {absent} is not compiled in for this architecture"):
        m.kernels = absent
    for bad in (-1, 10**6):
        with pytest.raises(BnhwError, match="threads"):
            m.threads = bad
    x = rand_input(g, 1, seed=0)[0]
    np.testing.assert_array_equal(m.run(x).reshape(-1), g.execute(x).reshape(-1))     # loaded from the file


# ----------------------------------------------------------------------------- threads
def test_threads_give_identical_outputs():
    """1, 2 and 3 threads give every stream bit for bit equal to the IR: every hand-built graph and random
    convolutions with every op split (conv pixel chunks, and channel slices where chunks are fewer than
    threads: groups, borders, every output kind; pixel ranges of thresholds, pools, shortcut adds,
    RPReLU), and a few-pixel deep conv whose work passes the default split threshold."""
    rng = np.random.default_rng(22)
    for make in GRAPHS.values():
        g = make()
        x = rand_input(g, 2, seed=5)
        for t in (1, 2, 3):
            check_all_streams(g, CpuModel(g, threads=t, split_threshold=0), x)
    for _ in range(40):
        g = random_conv_graph(rng)
        x = rand_input(g, 1, seed=int(rng.integers(1 << 30)))
        for t in (1, 2, 3):
            m = CpuModel(g, threads=t, split_threshold=0)
            assert m.threads == t
            check_all_streams(g, m, x)
    b = Builder("few_pixels", (2, 2, 1024), DType.bipolar())
    y = add_mvau(b, swg(b, "x", 3, pad=1), bipolar_w(rng, (256, 9 * 1024)))
    g = b.graph(y)
    x = rand_input(g, 2, seed=3)
    for t in (1, 2, 3):
        check_all_streams(g, CpuModel(g, threads=t), x)
    assert CpuModel(g).threads == default_threads() == os.sysconf("SC_NPROCESSORS_ONLN")


# ----------------------------------------------------------------------------- residual path variants
def residual_graph(variant: str) -> tuple[HwGraph, np.ndarray]:
    """A shortcut AddRequant, an RPReLU and a single-input AddRequant (7x9 pixels, 11 channels: the
    runtime's repeated-parameter lanes start mid-pattern in every pixel range) built so that the
    runtime takes one path of its residual ops, with inputs that hit every round-half-even tie and
    both clips:
    ``int32``: every intermediate fits int32 (the vector lanes); ``wide_params``: a parameter above
    2^30 (the int64 loops, chosen at load); ``wide_values``: INT32 inputs whose products pass 2^31 in
    some pixels only (chosen per pixel range at run time: both paths in one op when split);
    ``shift0``: shifts 0 / -1 and frac 0 (outside the int32 lanes' 1..30)."""
    rng = np.random.default_rng(7)
    C, H, W = 11, 7, 9
    wide_p, wide_v, s0 = variant == "wide_params", variant == "wide_values", variant == "shift0"
    tin = DType.int_(32) if wide_v else DType.int_(12)
    b = Builder(f"residual_{variant}", (H, W, C), tin)
    a, sc = b.add("Duplicate", "x", (H, W, C), tin, outputs=2)
    A = rng.integers(-40, 41, C)
    if wide_p:
        A[3] = (1 << 30) + 3
    if wide_v:
        A = rng.integers(-3, 4, C)
    t16 = DType.int_(16)
    y = b.add("AddRequant", [a, sc], (H, W, C), t16, {"shift": 0 if s0 else 3, "shortcut_shift": 0 if wide_v else 2},
              {"A": A, "B": rng.integers(-900, 900, C)})
    r = b.add("RPReLU", y, (H, W, C), DType.int_(12), {"frac": 0 if s0 else 4},
              {"S_in": rng.integers(-20, 20, C), "slope": rng.integers(-9, 17, C),
               "S_out": rng.integers(-30, 30, C)})
    out = b.add("AddRequant", r, (H, W, C), DType.int_(6), {"shift": -1 if s0 else 5},
                {"A": rng.integers(-7, 8, C), "B": rng.integers(-99, 99, C)})
    g = b.graph(out)
    x = rand_input(g, 3, seed=8)
    if wide_v:
        x[:, : H // 2] = rng.integers(-3000, 3000, x[:, : H // 2].shape)    # these rows fit int32
    return g, x


@pytest.mark.parametrize("variant", ["int32", "wide_params", "wide_values", "shift0"])
def test_residual_path_variants_bit_exact(variant):
    """Every path of the runtime's shortcut add / requantiser and RPReLU (int32 vector lanes, int64
    loops, the choice per pixel range) equals the IR on every stream, with every kernel set and 1, 2,
    3 threads (every op split)."""
    g, x = residual_graph(variant)
    for ks in kernel_sets():
        check_all_streams(g, CpuModel(g, kernels=ks), x)
    for t in (2, 3):
        check_all_streams(g, CpuModel(g, threads=t, split_threshold=0), x)


# ----------------------------------------------------------------------------- real networks vs QONNX
def _hwc(t: np.ndarray) -> np.ndarray:
    return t.transpose(1, 2, 0) if t.ndim == 3 else t.reshape(1, 1, -1)


@pytest.fixture(scope="module")
def subnet(tmp_path_factory):
    """nasbnn-cifar-smallest (a subnet of the searched CIFAR space: 34 MVAUs), the seeded model ``bnhw
    build`` uses, its QONNX export run by qonnx on real digit images, and its CPU model file."""
    from bnhw.data import digits_images
    from bnhw.hw.estimate import fresh_hardware_model, torch_threads
    from bnhw.hw.lower_binarynet import integer_input, lower_binarynet
    from bnhw.quant.export import _with_batch, execution_order, export_qonnx
    from bnhw.spec.zoo import get_arch

    tmp = tmp_path_factory.mktemp("cpu_subnet")
    spec = get_arch("nasbnn-cifar-smallest")
    with torch_threads(1):
        model = fresh_hardware_model(spec)
        g = lower_binarynet(model)
        export_qonnx(model, tmp / "m.onnx")
        x, _ = digits_images(spec.resolution, N_IMAGES, channels=spec.in_channels, seed=2)
    mw = _with_batch(ModelWrapper(str(tmp / "m.onnx")), N_IMAGES)
    ctx = execute_onnx(mw, {mw.graph.input[0].name: x.numpy()}, return_full_exec_context=True)
    order = [n for n in execution_order(mw) if mw.get_initializer(n.input[0]) is None]
    qonnx = {"quant": [ctx[n.output[0]] for n in order if n.op_type == "Quant"][1:],
             "binary": [ctx[n.output[0]] for n in order if n.op_type == "BipolarQuant"],
             "logits": ctx[mw.graph.output[0].name]}
    ints = integer_input(model, x)
    path = write_model(g, tmp / "m.bnhwcpu")
    return {"graph": g, "ints": ints, "qonnx": qonnx, "model_file": path,
            "lsb": 2.0 ** spec.precision.residual_frac_bits}


def check_subnet_vs_qonnx(sub, outputs: np.ndarray, streams: list[dict]) -> None:
    """Runtime tensors vs QONNX: every residual Quant tensor and binary activation bit-exact, the logits
    (integer accumulator times the float head) to float32 precision, and the labels."""
    g, q = sub["graph"], sub["qonnx"]
    res = [n.outputs[0] for n in g.nodes if n.op in ("AddRequant", "RPReLU", "GlobalAvgPool")]
    sig = [n.outputs[0] for n in g.nodes if n.op == "Thresholding"]
    assert len(res) == len(q["quant"]) and len(sig) == len(q["binary"]) >= 32
    for i, env in enumerate(streams):
        for s, t in zip(res, q["quant"], strict=True):
            assert np.array_equal(env[s], _hwc(t[i]) * sub["lsb"]), f"image {i}: {s} != QONNX"
        for s, t in zip(sig, q["binary"], strict=True):
            assert np.array_equal(env[s], _hwc(t[i])), f"image {i}: {s} != QONNX"
    head = g.meta["head"]
    logits = outputs.reshape(len(outputs), -1) * np.asarray(head["scale"]) + np.asarray(head["bias"])
    ref = q["logits"]
    np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    top2 = np.sort(ref, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 1e-4 * np.abs(ref).max()
    assert clear.sum() >= len(ref) // 2
    np.testing.assert_array_equal(logits.argmax(1)[clear], ref.argmax(1)[clear])


def test_subnet_native_bit_exact_vs_ir_and_qonnx(subnet):
    """Every kernel set on 1 and 2 threads (each set once per thread count; tap-row convs, fused epilogues,
    the pool's default split) equals the IR on every stream and QONNX on real images."""
    g = subnet["graph"]
    for i, ks in enumerate(kernel_sets()):
        m = CpuModel(g, kernels=ks, threads=1 + i % 2)
        envs = [m.run_all(x) for x in subnet["ints"]]
        outs = np.stack([e[g.output] for e in envs])
        check_subnet_vs_qonnx(subnet, outs, envs)
        for x, e in zip(subnet["ints"], envs):
            ref = g.execute(x, return_all=True)
            assert all(np.array_equal(v, ref[s]) for s, v in e.items())


def test_fused_epilogues_equal_op_by_op(subnet):
    """The NAS-BNN subnet with its pixel-wise ops fused into the convolutions' passes (the default) and
    with every op on its own: every stream bit-exact with the IR both ways on real images, with 1 and 2
    threads (every op split); fused ops report no time of their own, the conv carries it."""
    g = subnet["graph"]
    fused, plain = CpuModel(g, threads=1), CpuModel(g, threads=1, fuse=False)
    kinds = [o.op for o in fused.program.ops]
    assert plain.n_fused == 0 and not any(plain.op_fused())
    assert sum(fused.op_fused()) == fused.n_fused
    # every ADDREQUANT / RPRELU / THRESH / GATHER / AVGPOOLSUM of the subnet runs in a conv's pass
    assert fused.n_fused == sum(k in ("ADDREQUANT", "RPRELU", "THRESH", "GATHER", "AVGPOOLSUM") for k in kinds) > 100
    for x in subnet["ints"][:2]:
        ref = g.execute(x, return_all=True)
        for m in (fused, plain, CpuModel(g, threads=2, split_threshold=0)):
            got = m.run_all(x)
            assert all(np.array_equal(v, ref[s]) for s, v in got.items()), f"fuse={m.n_fused > 0} differs from the IR"
    secs, psecs = fused.op_seconds(), plain.op_seconds()
    conv = [i for i, k in enumerate(kinds) if k in ("BCONV", "ICONV")]
    assert all(secs[i] == 0 for i, f in enumerate(fused.op_fused()) if f)
    assert sum(secs[i] == 0 for i in range(len(kinds)) if i not in conv) == fused.n_fused
    assert (secs[conv] > 0).all() and (psecs > 0).sum() > len(conv)


@pytest.fixture(scope="module")
def cnv(tmp_path_factory):
    """CNV-W1A1 briefly trained on digits, exported, lowered; QONNX tensors on real test images."""
    from bnhw.hw.estimate import torch_threads
    from bnhw.hw.lower_qonnx import lower_reference
    from bnhw.quant.export import _with_batch
    from bnhw.quant.reference_nets import (
        export_reference,
        qonnx_input,
        reference_data,
        reference_input,
        train_reference,
    )

    tmp = tmp_path_factory.mktemp("cpu_cnv")
    with torch_threads(1):
        model = train_reference("cnv-w1a1", max_steps=10, batch_size=32, seed=0)
        path = export_reference(model, tmp / "cnv.onnx")
    g = lower_reference(path, "cnv-w1a1")
    x, y = reference_data("cnv-w1a1", "test")
    pixels = reference_input("cnv-w1a1", x[:N_IMAGES])
    mw = _with_batch(ModelWrapper(str(path)), N_IMAGES)
    ctx = execute_onnx(mw, {mw.graph.input[0].name: qonnx_input("cnv-w1a1", pixels)}, return_full_exec_context=True)
    return {"graph": g, "ints": pixels, "ctx": ctx, "logits": ctx[mw.graph.output[0].name],
            "model_file": write_model(g, tmp / "cnv.bnhwcpu")}


def check_cnv_vs_qonnx(cnv, outputs: np.ndarray, streams: list[dict]) -> None:
    g, ctx = cnv["graph"], cnv["ctx"]
    mapping = g.meta["qonnx_tensors"]
    kept = [s for s in mapping if s in streams[0]]
    assert len([s for s in kept if g.streams[s].dtype.is_bipolar]) >= 8
    for i, env in enumerate(streams):
        for s in kept:
            tensor, scale, sign = mapping[s]
            assert np.array_equal(_hwc(ctx[tensor][i]).astype(np.float64), sign * scale * env[s].astype(np.float64)), \
                f"image {i}: {s} != QONNX {tensor}"
    np.testing.assert_array_equal(outputs.reshape(-1), cnv["logits"].argmax(1))


def test_cnv_w1a1_native_bit_exact_vs_qonnx(cnv):
    g = cnv["graph"]
    assert [o.op for o in lower_cpu(g).ops].count("BCONV") == 8
    for ks in kernel_sets():
        m = CpuModel(g, kernels=ks)
        envs = [m.run_all(x) for x in cnv["ints"]]
        check_cnv_vs_qonnx(cnv, np.stack([e[g.output] for e in envs]), envs)


# ----------------------------------------------------------------------------- standalone and QEMU
def standalone_streams(model_file, ints, arch, kernels, g: HwGraph) -> tuple[np.ndarray, list[dict]]:
    r = run_standalone(model_file, ints, arch=arch, kernels=kernels, tensors=True)
    assert r["kernels"] == kernels or kernels == "opt"
    p = lower_cpu(g)
    sizes = [int(np.prod(t.shape)) for t in p.tensors]
    offs = np.concatenate([[0], np.cumsum(sizes)])
    envs = []
    for row in r["tensors"]:
        envs.append({s: row[offs[t]:offs[t + 1]].reshape(p.tensors[t].shape)
                     for s, t in p.stream_tensor.items() if "#" not in s})
    return r["outputs"], envs, r


ARCHS = [("native", "portable"), ("armv7", "neon"), ("aarch64", "neon")]


def _need(arch):
    ok, why = toolchain_status(arch)
    if not ok:
        pytest.skip(why)


@pytest.mark.parametrize("arch,kernels", ARCHS)
def test_standalone_subnet_bit_exact_vs_qonnx(subnet, arch, kernels):
    _need(arch)
    ints = subnet["ints"][:4] if arch != "native" else subnet["ints"]
    q = subnet["qonnx"]
    sub = dict(subnet, qonnx={"quant": [t[:len(ints)] for t in q["quant"]],
                              "binary": [t[:len(ints)] for t in q["binary"]], "logits": q["logits"][:len(ints)]})
    outs, envs, r = standalone_streams(subnet["model_file"], ints, arch, kernels, subnet["graph"])
    assert r["kernels"] == kernels
    check_subnet_vs_qonnx(sub, outs, envs)


@pytest.mark.parametrize("arch,kernels", ARCHS)
def test_standalone_cnv_bit_exact_vs_qonnx(cnv, arch, kernels):
    _need(arch)
    ints = cnv["ints"][:4] if arch != "native" else cnv["ints"]
    sub = dict(cnv, ctx={k: v[:len(ints)] if getattr(v, "ndim", 0) and v.shape[0] == N_IMAGES else v
                         for k, v in cnv["ctx"].items()}, logits=cnv["logits"][:len(ints)])
    outs, envs, r = standalone_streams(cnv["model_file"], ints, arch, kernels, cnv["graph"])
    assert r["kernels"] == kernels
    check_cnv_vs_qonnx(sub, outs, envs)


@pytest.mark.parametrize("arch", ["armv7", "aarch64"])
def test_qemu_reference_kernels_and_hand_built_graphs(arch, tmp_path):
    """The ARM builds with the reference kernels, and the NEON ones on the corner-case graphs (and the
    residual path's int32 lanes and int64 loops, the cell nets' window pools, crop and concatenation)."""
    _need(arch)
    graphs = [(GRAPHS[name](), None) for name in ("bin", "bireal", "int", "cell")]
    graphs += [residual_graph(v) for v in ("int32", "wide_values")]
    for g, xs in graphs:
        name = g.name
        x = rand_input(g, 3, seed=5) if xs is None else xs
        path = write_model(g, tmp_path / f"{name}.bnhwcpu")
        ref = np.stack([g.execute(v).reshape(-1) for v in x])
        for ks in ("ref", "neon"):
            r = run_standalone(path, x, arch=arch, kernels=ks)
            assert r["kernels"] == ks
            np.testing.assert_array_equal(r["outputs"], ref)


def test_standalone_reports_per_op_times(cnv):
    r = run_standalone(cnv["model_file"], cnv["ints"][:1], arch="native", repeat=3)
    names = [n for n, _ in r["op_seconds"]]
    assert names == [o.name for o in lower_cpu(cnv["graph"]).ops]
    assert all(t >= 0 for _, t in r["op_seconds"]) and r["total_seconds"] > 0


def test_standalone_threads_and_kernel_sets(cnv, tmp_path):
    """bnhw-run: --threads 1, 2, 3 give the same outputs and tensors bit for bit with every usable set;
    --kernels wins over $BNHW_KERNELS (default auto); a set this CPU lacks or an unknown one is one
    line and exit status 2, never an illegal instruction."""
    from bnhw.hw.cpu.cross import run_executable
    from bnhw.hw.cpu.runtime import build_runner

    ints = cnv["ints"][:2]
    base = None
    for ks in kernel_sets():
        for t in (1, 2, 3):
            r = run_standalone(cnv["model_file"], ints, arch="native", kernels=ks, threads=t, tensors=True)
            assert r["kernels"] == ks and r["threads"] == t
            if base is None:
                base = r
            np.testing.assert_array_equal(r["outputs"], base["outputs"])
            np.testing.assert_array_equal(r["tensors"], base["tensors"])
    exe = build_runner("native")
    x = tmp_path / "in.bin"
    np.ascontiguousarray(ints, dtype="<i4").tofile(x)
    out = tmp_path / "out.bin"

    def go(*args, env=None):
        return run_executable("native", exe, [cnv["model_file"], x, out, *args], env=env)

    assert go(env={"BNHW_KERNELS": "ref"}).stdout.startswith("kernels ref ")
    assert go("--kernels", "portable", env={"BNHW_KERNELS": "ref"}).stdout.startswith("kernels portable ")
    assert go(env={"BNHW_KERNELS": ""}).stdout.startswith(f"kernels {kernel_sets()[-1]} ")
    absent = "neon" if platform.machine().lower() in ("x86_64", "amd64") else "avx2"
    for args, needle in ((["--kernels", absent], f"kernel set {absent} is not compiled in for this architecture"),
                         (["--kernels", "bogus"], "unknown kernel set bogus"),
                         (["--threads", "-1"], "--threads takes 0"), (["--threads", "x"], "--threads takes 0")):
        p = go(*args)
        assert p.returncode == 2 and p.stderr.strip().startswith("error: ") and needle in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1


def test_thread_pool_has_no_data_races(cnv, tmp_path):
    """bnhw-run built with -fsanitize=thread runs CNV-W1A1 (convs big enough to be split) on 3 threads,
    several runs on one pool, without a race report, and with the one-thread outputs."""
    from bnhw.hw.cpu.cross import build_executable, run_executable
    from bnhw.hw.cpu.runtime import runner_sources

    extra = ("-fsanitize=thread", "-g")
    try:
        build_executable("native", {"probe.c": "int main(void) { return 0; }\n"}, "tsan_probe", extra_flags=extra)
    except BnhwError as e:
        pytest.skip(f"the host gcc cannot build with -fsanitize=thread ({e})")
    exe = build_executable("native", runner_sources(), "bnhw-run-tsan", extra_flags=extra)

    ints = cnv["ints"][:2]
    x, out = tmp_path / "in.bin", tmp_path / "out.bin"
    np.ascontiguousarray(ints, dtype="<i4").tofile(x)
    p = run_executable("native", exe, [cnv["model_file"], x, out, "--threads", "3", "--repeat", "3"],
                       env={"TSAN_OPTIONS": "halt_on_error=1"})
    assert p.returncode == 0 and "ThreadSanitizer" not in p.stderr, p.stderr[-3000:]
    want = run_standalone(cnv["model_file"], ints, arch="native", threads=1)["outputs"]
    np.testing.assert_array_equal(np.fromfile(out, dtype="<i4").reshape(len(ints), -1), want)


@pytest.mark.parametrize("cpu", ["qemu64", "Nehalem", "Haswell"])
def test_standalone_on_older_x86_cpus(cnv, tmp_path, cpu):
    """bnhw-run (one static build) under qemu-x86_64 on CPUs without AVX-512 / AVX2 / popcnt: auto picks
    the best set the CPU has, the outputs equal the native ones bit for bit on 2 threads, and asking
    for a set the CPU lacks is one line naming what it has, exit status 2."""
    from bnhw.hw.cpu.cross import build_executable
    from bnhw.hw.cpu.runtime import runner_sources

    cmd = qemu_x86(cpu)
    exe = build_executable("native", runner_sources(), "bnhw-run-static", extra_flags=("-static",))
    ints = cnv["ints"][:2]
    x, out = tmp_path / "in.bin", tmp_path / "out.bin"
    np.ascontiguousarray(ints, dtype="<i4").tofile(x)
    base = [*cmd, str(exe), str(cnv["model_file"]), str(x), str(out), "--threads", "2"]
    p = subprocess.run(base, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.startswith(f"kernels {OLDER_X86[cpu][-1]} "), p.stdout + p.stderr
    want = run_standalone(cnv["model_file"], ints, arch="native", threads=1)["outputs"]
    np.testing.assert_array_equal(np.fromfile(out, dtype="<i4").reshape(len(ints), -1), want)
    for s in ("avx2", "avx512"):
        if s in OLDER_X86[cpu]:
            continue
        p = subprocess.run([*base, "--kernels", s], capture_output=True, text=True, timeout=300)
        err = [ln for ln in p.stderr.splitlines() if not ln.startswith("qemu-x86_64: warning")]
        assert p.returncode == 2 and len(err) == 1 and err[0].startswith(f"error: kernel set {s} needs "), p.stderr
        assert "this CPU has" in err[0]


def test_makefile_cross_flags_match_the_python_builds():
    """`make cpu-runtime CPU_ARCH=...` (the board-side build) uses the flags the tests' builds use."""
    import re
    from pathlib import Path

    from bnhw.hw.cpu.cross import TARGETS

    text = (Path(__file__).parents[1] / "Makefile").read_text()
    for arch in ("armv7", "aarch64"):
        cc = re.search(rf"^CC_{arch}\s*:=\s*(.+)$", text, re.M).group(1).strip()
        flags = re.search(rf"^FLAGS_{arch}\s*:=\s*(.+)$", text, re.M).group(1).split()
        assert cc == TARGETS[arch].compiler and tuple(flags) == TARGETS[arch].flags
    # it links every source but the other programs' mains (runtime.MAINS), as the Python builds do
    from bnhw.hw.cpu.runtime import MAINS

    left_out = re.search(r"^CPU_C\s*:=\s*\$\(filter-out ([^,]+),", text, re.M).group(1).split()
    assert sorted(f.rsplit("/", 1)[-1] for f in left_out) == sorted(m for m in MAINS if m != "bnhw_run.c")


def test_popcount_peaks_run_only_where_the_cpu_has_them():
    """bench_peak.c's scalar and vector XOR-popcount loops: a positive rate for each kind this CPU runs,
    and for a kind it lacks a one-line error naming what it has (never the instruction)."""
    from bnhw.hw.cpu.runtime import POPCOUNT_PEAKS, xorpop_peak

    usable = kernel_sets()
    for kind in POPCOUNT_PEAKS:
        if kind == "scalar" or kind in usable:
            assert xorpop_peak(words=64, min_seconds=0.001, trials=1, kind=kind) > 0
        else:
            with pytest.raises(BnhwError, match=f"kernel set {kind} "):
                xorpop_peak(kind=kind)
    with pytest.raises(BnhwError, match="unknown popcount peak"):
        xorpop_peak(kind="sse")


def test_model_loader_fuzz(tmp_path):
    """1,500 mutants (fixed seed) of the hand-built graphs' model files -- bit flips, 32-bit fields set to
    boundary values, truncation, inserted / deleted bytes -- loaded by the runtime built with
    -fsanitize=address,undefined (tests/helpers/model_fuzz.c): every rejected file comes with a message,
    every accepted one runs (on 1 or 2 threads), and nothing reads out of bounds, overflows or leaks."""
    from pathlib import Path

    from bnhw.hw.cpu.cross import build_executable, run_executable
    from bnhw.hw.cpu.runtime import runtime_sources

    extra = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g")
    try:
        build_executable("native", {"probe.c": "int main(void) { return 0; }\n"}, "asan_probe", extra_flags=extra)
    except BnhwError as e:
        pytest.skip(f"the host gcc cannot build with sanitizers ({e}); `apt-get install -y gcc` provides them")
    driver = (Path(__file__).parent / "helpers" / "model_fuzz.c").read_text()
    exe = build_executable("native", {**runtime_sources(), "model_fuzz.c": driver}, "model_fuzz", extra_flags=extra)
    files = [write_model(GRAPHS[name](), tmp_path / f"{name}.bnhwcpu") for name in GRAPHS]
    count = 1500
    p = run_executable("native", exe, ["20261207", str(count), *files], timeout=600,
                       env={"ASAN_OPTIONS": "detect_leaks=1:allocator_may_return_null=1",
                            "UBSAN_OPTIONS": "print_stacktrace=1"})
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    line = p.stdout.strip().splitlines()[-1].split()
    assert line[:2] == ["mutants", str(count)], p.stdout
    rejected, accepted, ran = int(line[3]), int(line[5]), int(line[7])
    assert rejected + accepted == count and rejected > count // 2 and ran > 0
