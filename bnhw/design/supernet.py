"""A weight-sharing binary supernet over a :class:`~bnhw.spec.space.SearchSpace`
(NAS-BNN Sec. 3.3, built like once-for-all's elastic modules).

Every architecture of the space is a *subnet*: ``supernet(x, spec)`` runs it.

* **Depth**: a stage runs its first ``d`` blocks.
* **Width**: a layer uses the first ``c`` output channels of the shared
  weight, and the first ``Cin`` input channels.
* **Groups**: the shared weight of a k x k conv is stored in the layout of
  the stage's smallest group count, ``[max_out, max_in / g_min, K, K]``
  (each output channel's weights over the input slots of its group); a
  subnet with ``g`` groups and ``Cin`` inputs uses the first ``Cin / g``
  slots of every output channel (``weight[:Cout, :Cin/g]``), as dynamic
  convolutions in once-for-all-style supernets do.  This keeps the shared
  weights ``g_min`` times smaller than an ungrouped store.
* **Kernel**: the shared weight has the largest kernel; a smaller kernel is
  its centre crop, flattened and multiplied by a learnable, identity-initial
  ``k^2 x k^2`` kernel-transformation matrix (once-for-all), chained from
  the largest kernel down.
* **Bi-Transformation** (Eq. 5): the binary-domain latent weight is
  ``Reshape(Flatten(W_r) . theta)`` with one identity-initial ``k^2 x k^2``
  matrix per layer and kernel size; the full-precision domain (``W_r``) is
  what the Bi-Teacher uses.
* **Weight normalisation** (Eq. 6) on the latent weights before ``sign``.

:meth:`BinarySupernet.extract` builds the standalone Brevitas model of
:mod:`bnhw.quant` for a subnet and copies the active weights into it; both
compute exactly the same outputs (the binary convolutions see the same ±1
tensors and every other operation is the same elementwise float op).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from brevitas.nn import QuantConv2d, QuantIdentity
from torch import Tensor, nn

from .. import distributed as dist_util
from ..errors import BnhwError
from ..quant.binarizers import fixed_point_act_quant, fixed_point_weight_quant
from ..quant.layers import BinaryBlock, ChannelWeightNorm, RPReLU, folded_bn, rprelu, shortcut_index
from ..quant.model import BinaryNet, build_model
from ..spec import ArchSpec, Precision
from ..spec.space import SearchSpace


@dataclass(frozen=True)
class SupernetConfig:
    """Switches for the NAS-BNN training techniques (all on by default) and the initialisation.

    ``rprelu_init`` and ``zero_init_residual`` make a fresh supernet learn within minutes (measured on
    digits, docs/METHODS.md): an RPReLU after every residual addition with PReLU's usual initial slope 0.25
    shrinks the negative half of the residual stream 4x per layer, so after the 2 x 20 RPReLUs of a deep
    subnet the stream is all but positive and every sign activation reads +1 (no signal, no learning); an
    identity-initial slope (1.0) keeps it.  ``zero_init_residual`` starts every block's batch-norm scales at
    0 (each block begins as the identity, Goyal et al. 2017), so the stream does not grow with depth and
    the sign inputs stay inside the gradient window.  ``rprelu_init=0.25, zero_init_residual=False`` is
    ReActNet's / NAS-BNN's initialisation.
    """

    weight_norm: bool = True
    bi_transformation: bool = True
    rprelu_init: float = 1.0
    zero_init_residual: bool = True


# ----------------------------------------------------------------------------
# binarisation with training gradients
# ----------------------------------------------------------------------------
class _ApproxSign(torch.autograd.Function):
    """sign(x) (0 -> +1) forward; ReActNet / Bi-Real piecewise-polynomial gradient backward."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return (x >= 0).to(x.dtype) * 2 - 1

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        grad = torch.clamp(2.0 - 2.0 * x.abs(), min=0.0)
        return g * grad


class _SignSTE(torch.autograd.Function):
    """sign(w) (0 -> +1) forward; straight-through (identity) gradient, for latent weights."""

    @staticmethod
    def forward(ctx, w: Tensor) -> Tensor:
        return (w >= 0).to(w.dtype) * 2 - 1

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:
        return g


def act_sign(x: Tensor) -> Tensor:
    return _ApproxSign.apply(x)


def weight_sign(w: Tensor) -> Tensor:
    return _SignSTE.apply(w)


# ----------------------------------------------------------------------------
# elastic pieces
# ----------------------------------------------------------------------------
class _GlobalSum(torch.autograd.Function):
    """Sum over ranks forward and backward.  Each rank's loss depends on every rank's samples
    through the statistics; summing the ranks' gradients here and letting DDP average the
    parameter gradients gives the single-process gradient of the mean loss."""

    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:
        t = t.clone()
        torch.distributed.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:
        g = g.clone()
        torch.distributed.all_reduce(g)
        return g


class ElasticBN(nn.Module):
    """A batch norm over the first ``c`` of ``max_channels`` channels (``N x C`` or ``N x C x H x W``).

    Eval mode is :func:`~bnhw.quant.layers.folded_bn`, as in the standalone model.
    """

    def __init__(self, max_channels: int, eps: float = 1e-5, momentum: float | None = 0.1):
        super().__init__()
        self.bn = nn.BatchNorm2d(max_channels, eps=eps, momentum=momentum)  # its stats serve 1-d inputs too

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        bn = self.bn
        # track_running_stats=True (BatchNorm2d's default): the running buffers exist
        assert bn.running_mean is not None and bn.running_var is not None and bn.num_batches_tracked is not None
        if self.training:
            bn.num_batches_tracked += 1
            mom = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum  # None: cumulative
            if dist_util.is_dist() and torch.is_grad_enabled():   # training step, not a rank-local recalibration
                return self._synced(x, c, mom)
            return F.batch_norm(x, bn.running_mean[:c], bn.running_var[:c], bn.weight[:c], bn.bias[:c],
                                True, mom, bn.eps)
        return folded_bn(x, bn.weight[:c], bn.bias[:c], bn.running_mean[:c], bn.running_var[:c], bn.eps)

    def _synced(self, x: Tensor, c: int, mom: float) -> Tensor:
        """Batch statistics over the global batch of all ranks (what one process would compute)."""
        bn = self.bn
        dims = [0] + list(range(2, x.dim()))
        n_local = x.numel() // c
        assert bn.running_mean is not None and bn.running_var is not None  # track_running_stats=True
        stats = _GlobalSum.apply(torch.cat([x.sum(dims), (x * x).sum(dims), x.new_tensor([float(n_local)])]))
        n = stats[-1]
        mean = stats[:c] / n
        var = stats[c:2 * c] / n - mean * mean
        with torch.no_grad():
            bn.running_mean[:c].mul_(1 - mom).add_(mom * mean.detach())
            bn.running_var[:c].mul_(1 - mom).add_(mom * var.detach() * n / (n - 1))
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - mean.view(shape)) / torch.sqrt(var.view(shape) + bn.eps) * bn.weight[:c].view(shape) \
            + bn.bias[:c].view(shape)

    def copy_to(self, target: nn.modules.batchnorm._BatchNorm) -> None:
        c = target.num_features
        src = self.bn
        # both track running statistics (BatchNorm's default; the standalone model's FoldedBatchNorm)
        assert src.running_mean is not None and src.running_var is not None and src.num_batches_tracked is not None
        assert target.running_mean is not None and target.running_var is not None \
            and target.num_batches_tracked is not None
        with torch.no_grad():
            target.weight.copy_(src.weight[:c])
            target.bias.copy_(src.bias[:c])
            target.running_mean.copy_(src.running_mean[:c])
            target.running_var.copy_(src.running_var[:c])
            target.num_batches_tracked.copy_(src.num_batches_tracked)


class ElasticSign(nn.Module):
    """Learnable-threshold sign over the first ``c`` channels."""

    def __init__(self, max_channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, max_channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return act_sign(x - self.bias[:, : x.shape[1]])


class ElasticRPReLU(nn.Module):
    """:func:`~bnhw.quant.layers.rprelu` over the first ``c`` channels."""

    def __init__(self, max_channels: int, init_slope: float = 1.0):
        super().__init__()
        self.shift_in = nn.Parameter(torch.zeros(1, max_channels, 1, 1))
        self.slope = nn.Parameter(torch.full((max_channels,), init_slope))
        self.shift_out = nn.Parameter(torch.zeros(1, max_channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        # the standalone RPReLU's implementation (float mode: the supernet trains in float)
        return rprelu(x, self.shift_in[:, :c], self.slope[:c].contiguous(), self.shift_out[:, :c])


class ElasticBinaryConv(nn.Module):
    """A shared binary conv weight ``[max_out, max_in / min_groups, K, K]`` serving every
    (in, out, kernel, groups >= min_groups) choice; see the module docstring."""

    def __init__(self, max_in: int, max_out: int, kernels: tuple[int, ...], config: SupernetConfig,
                 min_groups: int = 1):
        super().__init__()
        self.kernels = tuple(sorted(kernels))
        self.kmax = self.kernels[-1]
        self.min_groups = min_groups
        self.config = config
        self.weight = nn.Parameter(torch.empty(max_out, max_in // min_groups, self.kmax, self.kmax))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        # once-for-all kernel transforms: key "5to3" maps the 5x5 centre crop to a 3x3 kernel
        self.kernel_transforms = nn.ParameterDict({
            f"{big}to{small}": nn.Parameter(torch.eye(small * small))
            for big, small in zip(self.kernels[1:], self.kernels[:-1])})
        self.bi_transforms = nn.ParameterDict(
            {str(k): nn.Parameter(torch.eye(k * k)) for k in self.kernels if k > 1}
            if config.bi_transformation else {})
        self.norm = ChannelWeightNorm()

    def real_weight(self, cin: int, cout: int, k: int, groups: int) -> Tensor:
        """The full-precision-domain latent weight ``W_r`` of a choice: ``[cout, cin/g, k, k]``."""
        if k not in self.kernels:
            raise BnhwError(f"kernel {k} not in the supernet's {self.kernels}")
        if groups < self.min_groups:
            raise BnhwError(f"groups {groups} below the supernet's minimum {self.min_groups}")
        w = self.weight[:cout, :cin // groups]
        cur = self.kmax
        for big, small in reversed(list(zip(self.kernels[1:], self.kernels[:-1]))):
            if cur <= k:
                break
            off = (big - small) // 2
            w = w[:, :, off:off + small, off:off + small]
            shape = w.shape
            w = (w.reshape(-1, small * small) @ self.kernel_transforms[f"{big}to{small}"]).reshape(shape)
            cur = small
        return w.contiguous()

    def binary_latent(self, w_r: Tensor) -> Tensor:
        """Bi-Transformation of ``W_r`` into the binary domain (identity when switched off or 1x1)."""
        k = w_r.shape[-1]
        if str(k) not in self.bi_transforms:
            return w_r
        shape = w_r.shape
        return (w_r.reshape(-1, k * k) @ self.bi_transforms[str(k)]).reshape(shape)

    def forward(self, x: Tensor, cout: int, k: int, groups: int, stride: int, binary_weights: bool = True) -> Tensor:
        cin = x.shape[1]
        w = self.real_weight(cin, cout, k, groups)
        if binary_weights:
            w = self.binary_latent(w)
            if self.config.weight_norm:
                w = self.norm(w)
            w = weight_sign(w)
        elif self.config.weight_norm:
            w = self.norm(w)
        return F.conv2d(x, w, None, stride, k // 2, 1, groups)


class ElasticBlock(nn.Module):
    """The supernet's version of :class:`~bnhw.quant.layers.BinaryBlock`."""

    def __init__(self, max_in: int, max_out: int, kernels: tuple[int, ...], config: SupernetConfig,
                 min_groups: int = 1):
        super().__init__()
        self.sign1 = ElasticSign(max_in)
        self.conv1 = ElasticBinaryConv(max_in, max_in, kernels, config, min_groups)
        self.bn1 = ElasticBN(max_in)
        self.act1 = ElasticRPReLU(max_in, config.rprelu_init)
        self.sign2 = ElasticSign(max_in)
        self.conv2 = ElasticBinaryConv(max_in, max_out, (1,), config)
        self.bn2 = ElasticBN(max_out)
        self.act2 = ElasticRPReLU(max_out, config.rprelu_init)
        if config.zero_init_residual:
            for bn in (self.bn1, self.bn2):
                nn.init.zeros_(bn.bn.weight)

    def forward(self, x: Tensor, cout: int, k: int, groups: int, stride: int, binary_weights: bool = True) -> Tensor:
        cin = x.shape[1]
        sc = F.avg_pool2d(x, 2, 2) if stride == 2 else x
        y = self.bn1(self.conv1(self.sign1(x), cin, k, groups, stride, binary_weights)) + sc
        x = self.act1(y)
        sc = x if cout == cin else x.index_select(1, shortcut_index(cin, cout))
        y = self.bn2(self.conv2(self.sign2(x), cout, 1, 1, 1, binary_weights)) + sc
        return self.act2(y)

    def copy_to(self, blk: BinaryBlock, cin: int, cout: int, k: int, groups: int) -> None:
        """Copy the active weights of one choice into a standalone ``BinaryBlock``."""
        with torch.no_grad():
            blk.sign1.bias.copy_(self.sign1.bias[:, :cin])
            blk.conv1.latent_weight.copy_(self.conv1.binary_latent(self.conv1.real_weight(cin, cin, k, groups)))
            self.bn1.copy_to(blk.bn1)
            _copy_rprelu(self.act1, blk.act1, cin)
            blk.sign2.bias.copy_(self.sign2.bias[:, :cin])
            blk.conv2.latent_weight.copy_(self.conv2.real_weight(cin, cout, 1, 1))
            self.bn2.copy_to(blk.bn2)
            _copy_rprelu(self.act2, blk.act2, cout)


def _copy_rprelu(src: ElasticRPReLU, dst: RPReLU, c: int) -> None:
    dst.shift_in.copy_(src.shift_in[:, :c])
    dst.prelu.weight.copy_(src.slope[:c])
    dst.shift_out.copy_(src.shift_out[:, :c])


class ElasticStem(nn.Module):
    """8-bit input quantiser + 8-bit conv (first ``c`` filters) + BN, as in :class:`~bnhw.quant.layers.Stem`."""

    def __init__(self, in_channels: int, max_channels: int, kernel: int, stride: int, precision: Precision):
        super().__init__()
        self.input_quant = QuantIdentity(
            act_quant=fixed_point_act_quant(precision.stem_bits, precision.stem_bits - 1))
        # a Brevitas conv holds the shared weight; its weight quantiser is applied to the active slice
        self.conv = QuantConv2d(in_channels, max_channels, kernel, stride=stride, padding=kernel // 2, bias=False,
                                weight_quant=fixed_point_weight_quant(precision.stem_bits))
        self.bn = ElasticBN(max_channels)

    def forward(self, x: Tensor, c: int) -> Tensor:
        x = self.input_quant(x)
        x = x.value if hasattr(x, "value") else x
        w = self.conv.weight[:c].contiguous()
        qw = self.conv.weight_quant(w)
        qw = qw.value if hasattr(qw, "value") else qw
        return self.bn(F.conv2d(x, qw, None, self.conv.stride, self.conv.padding))


class BinarySupernet(nn.Module):
    """All subnets of ``space`` in one module; ``forward(x, spec)`` runs one of them.

    ``num_classes`` overrides the space's (a proxy data set with fewer
    classes); specs run on it must have that many classes.
    """

    def __init__(self, space: SearchSpace, config: SupernetConfig | None = None, num_classes: int | None = None,
                 precision: Precision | None = None):
        super().__init__()
        self.space = space
        self.config = config or SupernetConfig()
        self.num_classes = num_classes or space.num_classes
        self.precision = precision or Precision()
        if self.precision.fixed:
            raise BnhwError("the supernet trains with a float residual path; convert subnets to fixed point after")
        self.stem = ElasticStem(space.in_channels, max(space.stem_widths), space.stem_kernel, space.stem_stride,
                                self.precision)
        self.stages = nn.ModuleList()
        prev_max = max(space.stem_widths)
        for sc in space.stages:
            blocks = nn.ModuleList()
            for i in range(max(sc.depths)):
                cin_max = prev_max if i == 0 else max(sc.widths)
                blocks.append(ElasticBlock(cin_max, max(sc.widths), sc.kernels, self.config, min(sc.groups)))
            self.stages.append(blocks)
            prev_max = max(sc.widths)
        self.fc = nn.Linear(prev_max, self.num_classes)
        self.fc_bn = ElasticBN(self.num_classes)

    def _block(self, stage: int, index: int) -> ElasticBlock:
        """Block ``index`` of stage ``stage`` (``self.stages`` is a ModuleList of ModuleLists of ElasticBlock)."""
        blocks = self.stages[stage]
        assert isinstance(blocks, nn.ModuleList)
        blk = blocks[index]
        assert isinstance(blk, ElasticBlock)
        return blk

    def check(self, spec: ArchSpec) -> None:
        if spec.num_classes != self.num_classes:
            raise BnhwError(f"subnet has {spec.num_classes} classes, the supernet {self.num_classes}")
        self.space.validate(spec)

    def forward(self, x: Tensor, spec: ArchSpec, binary_weights: bool = True) -> Tensor:
        """Logits of subnet ``spec``; ``binary_weights=False`` gives the Bi-Teacher's
        full-precision-weight, binary-activation (FWBA) network."""
        x = self.stem(x, spec.stem.channels)
        for si, stage in enumerate(spec.stages):
            for bi, b in enumerate(stage.blocks):
                x = self._block(si, bi)(x, b.channels, b.kernel, b.groups, b.stride, binary_weights)
        c = x.shape[1]
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc_bn(F.linear(x, self.fc.weight[:, :c].contiguous(), self.fc.bias))

    def subnet_spec(self, spec: ArchSpec) -> ArchSpec:
        """``spec`` with the supernet's number of classes (for proxy data)."""
        return spec.replace(num_classes=self.num_classes) if spec.num_classes != self.num_classes else spec

    @torch.no_grad()
    def extract(self, spec: ArchSpec) -> BinaryNet:
        """A standalone Brevitas :class:`BinaryNet` computing exactly what ``self(x, spec)`` computes."""
        self.check(spec)
        model = build_model(spec, weight_norm=self.config.weight_norm)
        c = spec.stem.channels
        model.stem.conv.weight.copy_(self.stem.conv.weight[:c])
        self.stem.bn.copy_to(model.stem.bn)
        for blk, g in zip(model.blocks, spec.blocks()):
            assert isinstance(blk, BinaryBlock)  # model.blocks: one BinaryBlock per spec block
            self._block(g.stage, g.index).copy_to(blk, g.in_channels, g.out_channels, g.block.kernel, g.block.groups)
        fc = model.classifier.fc
        fc.weight.copy_(self.fc.weight[:, :spec.final_channels])
        fc.bias.copy_(self.fc.bias)
        self.fc_bn.copy_to(model.classifier.bn)
        model.train(self.training)
        return model
