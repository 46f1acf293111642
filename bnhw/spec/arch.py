"""The architecture spec: one typed, validated, JSON-serialisable description of
a binary network.  Every other part of bnhw (search spaces, OPs estimator,
Brevitas builder, export, hardware flows) consumes an :class:`ArchSpec`.

A network is::

    input (resolution x resolution x in_channels, quantised to ``stem_bits``)
      -> stem: 8-bit k x k conv (stride s) + BN
      -> stages of binary blocks; each block is a NAS-BNN / ReActNet "separable"
         block:  k x k grouped binary conv (carries the stride), then a binary
         1 x 1 conv that sets the output width (each half with a Bi-Real
         shortcut, BN and a learnable-bias PReLU)
      -> global average pool -> classifier (num_classes)

Specs are immutable and hashable (so searches can de-duplicate them) and
serialise to / from plain JSON.  Malformed input raises :class:`SpecError`
whose message starts with the offending field, e.g.
``stages[2].blocks[1].groups: input channels 96 not divisible by groups 5``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from ..errors import BnhwError, SpecError

SPEC_VERSION = 1

RESIDUAL_MODES = ("float", "fixed")


# ----------------------------------------------------------------------------
# small typed readers that name the field on failure
# ----------------------------------------------------------------------------
def int_field(d: Mapping[str, Any], key: str, path: str, *, default: int | None = None,
         minimum: int | None = 1) -> int:
    fpath = f"{path}.{key}" if path else key
    if key not in d:
        if default is None:
            raise SpecError(fpath, "missing required field")
        return default
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        else:
            raise SpecError(fpath, f"expected an integer, got {v!r}")
    if minimum is not None and v < minimum:
        raise SpecError(fpath, f"must be >= {minimum}, got {v}")
    return v


def check_keys(d: Any, allowed: tuple[str, ...], path: str) -> None:
    if not isinstance(d, Mapping):
        raise SpecError(path or "spec", f"expected an object, got {type(d).__name__}")
    for k in d:
        if k not in allowed:
            where = f"{path}.{k}" if path else str(k)
            raise SpecError(where, f"unknown key (expected one of: {', '.join(allowed)})")


# ----------------------------------------------------------------------------
# the spec types
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class StemSpec:
    """The 8-bit input convolution (conv + BN, no binarisation)."""

    channels: int
    kernel: int = 3
    stride: int = 2

    KEYS = ("channels", "kernel", "stride")

    @classmethod
    def from_dict(cls, d: Any, path: str = "stem") -> StemSpec:
        check_keys(d, cls.KEYS, path)
        return cls(
            channels=int_field(d, "channels", path),
            kernel=int_field(d, "kernel", path, default=3),
            stride=int_field(d, "stride", path, default=2),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"channels": self.channels, "kernel": self.kernel, "stride": self.stride}


@dataclass(frozen=True)
class BlockSpec:
    """One binary separable block: k x k grouped conv (stride) + 1 x 1 conv to ``channels``."""

    channels: int
    kernel: int = 3
    groups: int = 1
    stride: int = 1

    KEYS = ("channels", "kernel", "groups", "stride")

    @classmethod
    def from_dict(cls, d: Any, path: str) -> BlockSpec:
        check_keys(d, cls.KEYS, path)
        return cls(
            channels=int_field(d, "channels", path),
            kernel=int_field(d, "kernel", path, default=3),
            groups=int_field(d, "groups", path, default=1),
            stride=int_field(d, "stride", path, default=1),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"channels": self.channels, "kernel": self.kernel, "groups": self.groups,
                "stride": self.stride}

    def short(self) -> str:
        s = f"c{self.channels}_k{self.kernel}_g{self.groups}"
        return s + (f"_s{self.stride}" if self.stride != 1 else "")


@dataclass(frozen=True)
class StageSpec:
    blocks: tuple[BlockSpec, ...]

    KEYS = ("blocks",)

    @classmethod
    def from_dict(cls, d: Any, path: str) -> StageSpec:
        check_keys(d, cls.KEYS, path)
        if "blocks" not in d:
            raise SpecError(f"{path}.blocks", "missing required field")
        blocks = d["blocks"]
        if not isinstance(blocks, list) or not blocks:
            raise SpecError(f"{path}.blocks", "expected a non-empty list of blocks")
        return cls(tuple(BlockSpec.from_dict(b, f"{path}.blocks[{i}]") for i, b in enumerate(blocks)))

    def to_dict(self) -> dict[str, Any]:
        return {"blocks": [b.to_dict() for b in self.blocks]}

    @property
    def depth(self) -> int:
        return len(self.blocks)


@dataclass(frozen=True)
class Precision:
    """How the non-binary parts of the network are represented.

    Binary convolutions always use 1-bit weights and 1-bit activations.
    ``stem_bits`` quantises the input image and the stem weights.  The
    real-valued path (stem output, BN outputs, Bi-Real shortcut sums, PReLU
    outputs, pooled features) is either left in float (``residual="float"``,
    the usual training setting) or quantised to signed fixed point with
    ``residual_bits`` total bits of which ``residual_frac_bits`` are
    fractional (``residual="fixed"``, what integer hardware runs); in fixed
    mode the classifier weights are ``classifier_bits``-bit integers.

    Fixed mode also puts every constant of the real-valued path on a dyadic
    grid, so that the network is integer arithmetic throughout and its
    float32 evaluation (PyTorch, the exported QONNX graph) is exact (see
    :mod:`bnhw.quant.layers`): the folded batch-norm constants after the
    binary convolutions on ``2**-bn_frac_bits``, the RPReLU slopes on
    ``2**-slope_frac_bits``, the RPReLU shifts on the residual grid.
    """

    stem_bits: int = 8
    residual: str = "float"
    residual_bits: int = 16
    residual_frac_bits: int = 8
    classifier_bits: int = 8
    bn_frac_bits: int = 12
    slope_frac_bits: int = 8

    KEYS = ("stem_bits", "residual", "residual_bits", "residual_frac_bits", "classifier_bits",
            "bn_frac_bits", "slope_frac_bits")

    @classmethod
    def from_dict(cls, d: Any, path: str = "precision") -> Precision:
        check_keys(d, cls.KEYS, path)
        residual = d.get("residual", "float")
        if residual not in RESIDUAL_MODES:
            raise SpecError(f"{path}.residual", f"expected one of {RESIDUAL_MODES}, got {residual!r}")
        p = cls(
            stem_bits=int_field(d, "stem_bits", path, default=8, minimum=2),
            residual=residual,
            residual_bits=int_field(d, "residual_bits", path, default=16, minimum=2),
            residual_frac_bits=int_field(d, "residual_frac_bits", path, default=8, minimum=0),
            classifier_bits=int_field(d, "classifier_bits", path, default=8, minimum=2),
            bn_frac_bits=int_field(d, "bn_frac_bits", path, default=12, minimum=0),
            slope_frac_bits=int_field(d, "slope_frac_bits", path, default=8, minimum=0),
        )
        p.validate(path)
        return p

    def validate(self, path: str = "precision") -> None:
        if self.residual not in RESIDUAL_MODES:
            raise SpecError(f"{path}.residual", f"expected one of {RESIDUAL_MODES}")
        if self.stem_bits > 16:
            raise SpecError(f"{path}.stem_bits", f"at most 16 bits supported, got {self.stem_bits}")
        if self.residual_bits > 32:
            raise SpecError(f"{path}.residual_bits", f"at most 32 bits supported, got {self.residual_bits}")
        if self.residual_frac_bits >= self.residual_bits:
            raise SpecError(f"{path}.residual_frac_bits",
                            f"must be < residual_bits ({self.residual_bits}), got {self.residual_frac_bits}")
        if self.classifier_bits > 16:
            raise SpecError(f"{path}.classifier_bits", f"at most 16 bits supported, got {self.classifier_bits}")
        if self.fixed:
            # the float32-exactness conditions of the fixed-point path (bnhw.quant.layers)
            if self.residual_bits > 23:
                raise SpecError(f"{path}.residual_bits",
                                f"at most 23 bits in fixed mode (float32-exact), got {self.residual_bits}")
            shift = self.bn_frac_bits - self.residual_frac_bits
            if shift < 2:
                raise SpecError(f"{path}.bn_frac_bits",
                                f"must be >= residual_frac_bits + 2 ({self.residual_frac_bits + 2}), "
                                f"got {self.bn_frac_bits}")
            if self.residual_bits - 1 + shift > 22:
                raise SpecError(f"{path}.bn_frac_bits",
                                f"residual_bits - 1 + bn_frac_bits - residual_frac_bits must be <= 22 "
                                f"(float32-exact shortcut add), got {self.residual_bits - 1 + shift}")
            if self.residual_bits + self.slope_frac_bits > 24:
                raise SpecError(f"{path}.slope_frac_bits",
                                f"residual_bits + slope_frac_bits must be <= 24 (float32-exact RPReLU), "
                                f"got {self.residual_bits + self.slope_frac_bits}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def fixed(self) -> bool:
        return self.residual == "fixed"


@dataclass(frozen=True)
class BlockGeometry:
    """A block placed in the network: its input/output shapes."""

    stage: int
    index: int            # index inside the stage
    block: BlockSpec
    in_channels: int
    in_size: int          # spatial size (square) at the block input
    out_size: int         # spatial size after the stride

    @property
    def out_channels(self) -> int:
        return self.block.channels

    @property
    def name(self) -> str:
        return f"s{self.stage + 1}l{self.index + 1}"


@dataclass(frozen=True)
class ArchSpec:
    """A complete binary network (see the module docstring); a :class:`~bnhw.spec.protocol.NetworkSpec`."""

    kind: ClassVar[Literal["blocks"]] = "blocks"

    num_classes: int
    resolution: int
    stem: StemSpec
    stages: tuple[StageSpec, ...]
    in_channels: int = 3
    precision: Precision = field(default_factory=Precision)
    space: str | None = None
    name: str = ""

    KEYS = ("version", "name", "space", "resolution", "in_channels", "num_classes", "stem",
            "stages", "precision")

    # -- construction ------------------------------------------------------
    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_dict(cls, d: Any, *, check_space: bool = True) -> ArchSpec:
        check_keys(d, cls.KEYS, "")
        version = d.get("version", SPEC_VERSION)
        if version != SPEC_VERSION:
            raise SpecError("version", f"unsupported spec version {version!r} (this bnhw reads {SPEC_VERSION})")
        name = d.get("name", "")
        if not isinstance(name, str):
            raise SpecError("name", f"expected a string, got {name!r}")
        space = d.get("space")
        if space is not None and not isinstance(space, str):
            raise SpecError("space", f"expected a string or null, got {space!r}")
        if "stem" not in d:
            raise SpecError("stem", "missing required field")
        stages = d.get("stages")
        if not isinstance(stages, list) or not stages:
            raise SpecError("stages", "expected a non-empty list of stages")
        spec = cls(
            name=name,
            space=space,
            resolution=int_field(d, "resolution", ""),
            in_channels=int_field(d, "in_channels", "", default=3),
            num_classes=int_field(d, "num_classes", ""),
            stem=StemSpec.from_dict(d["stem"]),
            stages=tuple(StageSpec.from_dict(s, f"stages[{i}]") for i, s in enumerate(stages)),
            precision=Precision.from_dict(d.get("precision", {})),
        )
        if check_space and space is not None:
            from .space import get_space

            get_space(space).validate(spec)
        return spec

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"version": SPEC_VERSION}
        if self.name:
            d["name"] = self.name
        d["space"] = self.space
        d.update({
            "resolution": self.resolution,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "stem": self.stem.to_dict(),
            "stages": [s.to_dict() for s in self.stages],
            "precision": self.precision.to_dict(),
        })
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str, *, check_space: bool = True) -> ArchSpec:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError("", f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
        return cls.from_dict(d, check_space=check_space)

    def save(self, path: str | os.PathLike[str]) -> Path:
        return atomic_write_text(path, self.to_json() + "\n")

    def replace(self, **changes: Any) -> ArchSpec:
        return dataclasses.replace(self, **changes)

    def hardware_gaps(self) -> tuple[str, ...]:
        """Block networks lower to the hardware IR entirely."""
        return ()

    # -- validation --------------------------------------------------------
    def validate(self) -> None:
        """Structural checks that hold for every spec, whatever its space."""
        for fname in ("num_classes", "resolution", "in_channels"):
            v = getattr(self, fname)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise SpecError(fname, f"must be a positive integer, got {v!r}")
        if not self.stages:
            raise SpecError("stages", "expected at least one stage")
        self.precision.validate()
        st = self.stem
        for fname in ("channels", "kernel", "stride"):
            v = getattr(st, fname)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise SpecError(f"stem.{fname}", f"must be a positive integer, got {v!r}")
        if st.kernel % 2 == 0:
            raise SpecError("stem.kernel", f"must be odd (same padding), got {st.kernel}")
        if self.resolution % st.stride:
            raise SpecError("resolution", f"{self.resolution} is not divisible by the stem stride {st.stride}")
        size = self.resolution // st.stride
        cin = st.channels
        for si, stage in enumerate(self.stages):
            if not stage.blocks:
                raise SpecError(f"stages[{si}].blocks", "a stage needs at least one block")
            for bi, b in enumerate(stage.blocks):
                p = f"stages[{si}].blocks[{bi}]"
                for fname in ("channels", "kernel", "groups", "stride"):
                    v = getattr(b, fname)
                    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                        raise SpecError(f"{p}.{fname}", f"must be a positive integer, got {v!r}")
                if b.kernel % 2 == 0:
                    raise SpecError(f"{p}.kernel", f"must be odd (same padding), got {b.kernel}")
                if b.stride not in (1, 2):
                    raise SpecError(f"{p}.stride", f"must be 1 or 2, got {b.stride}")
                if cin % b.groups:
                    raise SpecError(f"{p}.groups", f"input channels {cin} not divisible by groups {b.groups}")
                if b.stride == 2:
                    if size % 2:
                        raise SpecError(f"{p}.stride",
                                        f"input size {size}x{size} is odd; a stride-2 block (and its 2x2 "
                                        "average-pool shortcut) needs an even size")
                    size //= 2
                cin = b.channels

    # -- derived views -----------------------------------------------------
    def blocks(self) -> Iterator[BlockGeometry]:
        """Every block with its input channels and spatial sizes, in order."""
        size = self.resolution // self.stem.stride
        cin = self.stem.channels
        for si, stage in enumerate(self.stages):
            for bi, b in enumerate(stage.blocks):
                out = size // b.stride
                yield BlockGeometry(si, bi, b, cin, size, out)
                size, cin = out, b.channels

    @property
    def stem_out_size(self) -> int:
        return self.resolution // self.stem.stride

    @property
    def final_channels(self) -> int:
        return self.stages[-1].blocks[-1].channels

    @property
    def final_size(self) -> int:
        size = self.stem_out_size
        for g in self.blocks():
            size = g.out_size
        return size

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(s.depth for s in self.stages)

    def widths(self) -> list[int]:
        """Output width of every layer, stem first (the sequence the ND constraint orders)."""
        return [self.stem.channels] + [b.channels for s in self.stages for b in s.blocks]

    def short(self) -> str:
        """A compact one-line description in the notation of NAS-BNN's Table 6."""
        parts = [f"stem:c{self.stem.channels}_k{self.stem.kernel}"]
        for i, s in enumerate(self.stages):
            parts.append(f"S{i + 1}:" + ",".join(b.short() for b in s.blocks))
        return " ".join(parts)


# ----------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------
def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temp file in the same folder + rename)."""
    return atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def load_spec(path_or_name: str | os.PathLike[str], *, check_space: bool = True) -> Any:
    """A :class:`~bnhw.spec.protocol.NetworkSpec` from a JSON file (parsed by its ``kind``: an
    :class:`ArchSpec`, or a :class:`~bnhw.spec.cells.CellNetSpec` for ``"cells"``), or a bundled one by
    name (see :mod:`bnhw.spec.zoo`)."""
    from .protocol import spec_from_dict

    p = Path(path_or_name)
    if p.suffix.lower() == ".json" or p.exists():
        try:
            text = p.read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise BnhwError(f"{p}: no such file") from None
        except OSError as e:
            raise BnhwError(f"{p}: cannot read ({e.strerror})") from None
        except UnicodeDecodeError:
            raise BnhwError(f"{p}: not UTF-8 text (a JSON spec is expected)") from None
        try:
            try:
                d = json.loads(text)
            except json.JSONDecodeError as e:
                raise SpecError("", f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
            return spec_from_dict(d, check_space=check_space)
        except SpecError as e:
            raise SpecError(e.field, f"{e.reason} (in {p})") from None
    from .zoo import get_arch

    return get_arch(str(path_or_name))
