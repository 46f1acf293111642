"""FPGA throughput, latency and resources of an architecture spec on a board, without a build.

:func:`estimate_fpga` does the modelling half of ``bnhw build`` for a spec:

1. the network with seeded fresh weights, exactly as the build flow makes it for
   a spec without ``--checkpoint`` (:func:`fresh_hardware_model`: ``torch``
   seed 0, batch-norm statistics estimated on 64 digits images, the float
   residual path converted to fixed point);
2. lowered to the integer hardware IR (:func:`bnhw.hw.lower_binarynet.lower_binarynet`);
3. folded for the highest FPS whose estimated LUT / BRAM18 / URAM / DSP fit
   ``margin`` of the board (:func:`bnhw.hw.folding.maximize_fps`), every unit's
   cycles and resources from FINN's analytical models
   (:mod:`bnhw.hw.finn_models`);
4. II = the slowest unit's cycles, FPS = clock / II, latency = the longest path
   of per-unit cycles through the graph (FINN's critical-path estimate).

No QONNX export and no IR-vs-QONNX check are done (``bnhw build`` does both);
they change nothing in the numbers.  A network that fits at no folding gives
``fits=False`` and ``fps=0``; its ``resources`` are then those of the fully
folded design (every PE and SIMD 1), for reference.

The weights matter a little: FINN (and bnhw) size accumulators from the
weights and the per-channel batch-norm constants of the residual path from
the batch-norm statistics, which is why the calibration of step 1 is kept
(skipping it moved ``nasbnn-cifar-smallest`` on pynq-z2 from 1,808 to 904 FPS
in a test, the design being LUT-bound near the budget).

``refine`` is the hook for a cycle simulator: a callable taking the folded
:class:`~bnhw.hw.ir.HwGraph` and returning ``{"ii_cycles": .., "latency_cycles": ..}``
replaces the analytical II and latency (resources stay analytical) and is
named in :attr:`FpgaEstimate.source`.

Estimates are cached per (spec without its name, board, margin, clock,
refine): in memory (a process-wide cache by default, ``cache=None`` for
none) or in a JSON file the caller names (written atomically after every
new entry; entries of other model code are ignored), because a search
measures the same architecture many times.

Cost on a 2-core machine: about 3 s for ``nasbnn-cifar-smallest``, 4-5 s for
``nasbnn-cifar-largest``, 7 s for an ImageNet-space sample at 32 x 32 (plus
about 4 s of imports on the first call of a process; a cached estimate takes
well under a millisecond).  Most of it is building the Brevitas model
three times (fresh, ``to_fixed``, the lowering's baked copy) and the folding
search; torch runs with one thread meanwhile (:func:`torch_threads`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import BnhwError
from ..spec import ArchSpec, atomic_write_text
from ..spec.cells import CellNetSpec
from .finn_models import FINN_PLUS_VERSION
from .folding import critical_path_cycles

__all__ = ["ANALYTICAL_SOURCE", "DEFAULT_CACHE", "EstimateCache", "FpgaEstimate", "cache_key", "critical_path_cycles",
           "estimate_fpga", "file_cache", "fresh_hardware_model", "refine_label", "spec_hw_graph", "torch_threads"]

ANALYTICAL_SOURCE = "analytical (FINN cycle/resource models, bnhw folding)"
RESOURCE_KEYS = ("LUT", "BRAM18", "URAM", "DSP")


def _model_version() -> str:
    """What a cached estimate depends on besides its key: the bnhw version and a hash of the modules
    that build, lower, fold and estimate (a disk cache written by other code is ignored)."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for rel in ("estimators/fpga.py", "estimators/finn_models.py", "hw/folding.py", "hw/lower_binarynet.py",
                "hw/ir.py", "quant/layers.py", "quant/model.py"):
        try:
            h.update((root / rel).read_bytes())
        except OSError:
            h.update(rel.encode())
    return f"bnhw {__version__}; finn-plus {FINN_PLUS_VERSION} models; sources {h.hexdigest()[:16]}"


MODEL_VERSION = _model_version()
CALIBRATION_IMAGES = 64          # as bnhw.flows.build for a spec without --checkpoint
CALIBRATION_SEED = 1
WEIGHT_SEED = 0

Refine = Callable[[Any], Mapping[str, int]]


# ----------------------------------------------------------------------------- the estimate
@dataclass(frozen=True)
class FpgaEstimate:
    """One architecture on one board (see the module docstring for how each field is obtained)."""

    arch: str
    board: str
    fits: bool
    fps: float                                  # 0 when it does not fit
    ii_cycles: int | None                       # initiation interval: slowest unit (None: does not fit)
    latency_cycles: int | None                  # longest path of unit cycles (None: does not fit)
    latency_ms: float | None
    resources: dict[str, float]                 # LUT / BRAM18 / URAM / DSP totals of the chosen folding
    utilisation: dict[str, float | None]        # resources / the board's (None: the board has none)
    clock_mhz: float
    margin: float
    folding: dict[str, dict[str, int]]          # FINN folding config of the chosen design ({} if it does not fit)
    units: int                                  # hardware units in the graph
    source: str = ANALYTICAL_SOURCE
    bottleneck: str | None = None               # the slowest unit
    reason: str = ""                            # why it does not fit
    seconds: float = 0.0                        # time the estimate took (when computed, not when cached)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FpgaEstimate:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def summary(self) -> str:
        if not self.fits:
            return f"{self.arch or 'arch'} does not fit {self.board} ({self.reason})"
        return (f"{self.arch or 'arch'} on {self.board}: {self.fps:,.1f} FPS, latency {self.latency_ms:.3f} ms, "
                f"LUT {self.resources['LUT']:,.0f} BRAM18 {self.resources['BRAM18']:,.0f} "
                f"DSP {self.resources['DSP']:,.0f} [{self.source}]")


# ----------------------------------------------------------------------------- the network
def fresh_hardware_model(spec: ArchSpec | CellNetSpec):
    """The fixed-point model (a :class:`~bnhw.quant.model.BinaryNet` or a cell net's
    :class:`~bnhw.quant.cellnet.CellNet`) ``bnhw build`` makes for ``spec`` without
    a checkpoint: weights from ``torch`` seed 0, batch-norm statistics estimated on 64 digits images
    (two batches of 32, sample seed 1), a float residual path converted with ``to_fixed``.

    The global ``torch`` random state is restored afterwards (the caller's stream is untouched).
    """
    import torch

    from ..data import digits_images
    from ..quant.checkpoint import load_model
    from ..quant.model import recalibrate_bn, to_fixed

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(WEIGHT_SEED)
        model = load_model(spec)
        x, _ = digits_images(spec.resolution, CALIBRATION_IMAGES, channels=spec.in_channels, seed=CALIBRATION_SEED)
        half = CALIBRATION_IMAGES // 2
        recalibrate_bn(model, [x[:half], x[half:]])
    if not spec.precision.fixed:
        model = to_fixed(model)
    return model


def spec_hw_graph(spec: ArchSpec | CellNetSpec):
    """The hardware IR (:class:`~bnhw.hw.ir.HwGraph`) of :func:`fresh_hardware_model`, at PE = SIMD = 1."""
    from .lowering import lower_model

    return lower_model(fresh_hardware_model(spec))


@contextlib.contextmanager
def torch_threads(n: int):
    """Run torch with ``n`` intra-op threads inside the block (restored afterwards).

    The estimate's forward passes are small; on a loaded 2-core machine torch's
    default thread pool made the batch-norm calibration 30x slower (10 s instead
    of 0.35 s for ``nasbnn-cifar-smallest``) while one thread costs nothing.
    """
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ----------------------------------------------------------------------------- cache
def cache_key(spec: ArchSpec, board: str, margin: float, clock_mhz: float, refine: str | None = None) -> str:
    """One string per (architecture without its name, board, margin, clock, refine)."""
    return json.dumps([spec.replace(name="").to_dict(), board, float(margin), float(clock_mhz), refine],
                      sort_keys=True, separators=(",", ":"))


class EstimateCache:
    """Estimates by :func:`cache_key`, in memory and, with ``path``, in a JSON file.

    The file is read once when the cache is made (an unreadable, corrupted or
    other-version file is ignored and overwritten) and rewritten atomically
    after every new entry, so an interrupted search loses nothing it measured.
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, dict] = {}
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        if self.path is not None and self.path.is_file():
            try:
                d = json.loads(self.path.read_text())
                if isinstance(d, dict) and d.get("model") == MODEL_VERSION and isinstance(d.get("entries"), dict):
                    self.entries = dict(d["entries"])
            except (OSError, ValueError):
                pass

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: str) -> FpgaEstimate | None:
        with self._lock:
            d = self.entries.get(key)
            if d is None:
                self.misses += 1
                return None
            self.hits += 1
        return FpgaEstimate.from_dict(d)

    def put(self, key: str, est: FpgaEstimate) -> None:
        with self._lock:
            self.entries[key] = est.to_dict()
            if self.path is not None:
                self.save()

    def save(self) -> None:
        if self.path is not None:
            atomic_write_text(self.path, json.dumps({"model": MODEL_VERSION, "entries": self.entries},
                                                    allow_nan=False) + "\n")

    def estimates(self) -> list[FpgaEstimate]:
        return [FpgaEstimate.from_dict(d) for d in self.entries.values()]


#: the process-wide in-memory cache :func:`estimate_fpga` uses by default
DEFAULT_CACHE = EstimateCache()
_FILE_CACHES: dict[Path, EstimateCache] = {}


def file_cache(path: str | Path) -> EstimateCache:
    """The process-wide :class:`EstimateCache` backed by ``path`` (one object per file)."""
    p = Path(path).resolve()
    if p not in _FILE_CACHES:
        _FILE_CACHES[p] = EstimateCache(p)
    return _FILE_CACHES[p]


def _resolve_cache(cache: EstimateCache | str | Path | None) -> EstimateCache | None:
    if cache is None or isinstance(cache, EstimateCache):
        return cache
    return file_cache(cache)


def refine_label(refine: Refine | None) -> str | None:
    if refine is None:
        return None
    return str(getattr(refine, "label", None) or getattr(refine, "__qualname__", None) or type(refine).__name__)


# ----------------------------------------------------------------------------- the estimator
def estimate_fpga(spec: ArchSpec, board: str, *, margin: float = 0.85, clock_mhz: float | None = None,
                  cache: EstimateCache | str | Path | None = DEFAULT_CACHE,
                  refine: Refine | None = None) -> FpgaEstimate:
    """FPS, latency and resources of ``spec`` on ``board`` at the best folding within ``margin`` of it.

    ``cache``: an :class:`EstimateCache`, a JSON file path (a process-wide
    cache backed by that file) or ``None`` (no caching).  ``refine``: see the
    module docstring (a ``label`` attribute names it in ``source`` and in the
    cache key; otherwise its qualified name).
    """
    from .boards import get_board

    b = get_board(board)
    clock = float(clock_mhz if clock_mhz is not None else b.clock_mhz)
    if not (clock > 0 and math.isfinite(clock)):
        raise BnhwError(f"clock must be a positive number of MHz, got {clock_mhz!r}")
    if not 0 < margin <= 1:
        raise BnhwError(f"margin must be in (0, 1], got {margin!r}")
    label = refine_label(refine)
    store = _resolve_cache(cache)
    key = cache_key(spec, b.name, margin, clock, label)
    if store is not None:
        hit = store.get(key)
        if hit is not None:
            return dataclasses.replace(hit, arch=spec.name)
    est = _estimate(spec, b, margin, clock, refine, label)
    if store is not None:
        store.put(key, est)
    return est


def _estimate(spec: ArchSpec, b, margin: float, clock: float, refine: Refine | None, label: str | None
              ) -> FpgaEstimate:
    from .folding import FitError, board_budget, graph_cost, maximize_fps

    t0 = time.perf_counter()
    with torch_threads(1):
        g = spec_hw_graph(spec)
    board_res = b.budget()

    def util(total: Mapping[str, float]) -> dict[str, float | None]:
        return {k: (float(total[k]) / board_res[k] if board_res[k] else None) for k in RESOURCE_KEYS}

    try:
        folded = maximize_fps(g, board_budget(b, margin), board_name=b.name)
    except FitError as e:
        least = graph_cost(g).total                   # fully folded (PE = SIMD = 1): for reference
        return FpgaEstimate(spec.name, b.name, False, 0.0, None, None, None,
                            {k: float(least[k]) for k in RESOURCE_KEYS}, util(least), clock, margin, {},
                            len(g.nodes), _source(label), None, str(e), time.perf_counter() - t0)
    ii = int(folded.ii)
    latency = int(critical_path_cycles(folded.graph, folded.cycles))
    bottleneck = max(folded.cycles, key=lambda k: folded.cycles[k]) if folded.cycles else None
    if refine is not None:
        r = refine(folded.graph)
        try:
            ii, latency = int(r["ii_cycles"]), int(r["latency_cycles"])
        except (KeyError, TypeError, ValueError) as e:
            raise BnhwError(f"refine {label} must return ii_cycles and latency_cycles ({e})") from None
        if ii <= 0:
            raise BnhwError(f"refine {label} returned ii_cycles={ii}")
    total = {k: float(folded.total[k]) for k in RESOURCE_KEYS}
    return FpgaEstimate(spec.name, b.name, True, clock * 1e6 / ii, ii, latency, latency / (clock * 1e3), total,
                        util(total), clock, margin, folded.graph.folding(), len(g.nodes), _source(label),
                        bottleneck, "", time.perf_counter() - t0)


def _source(label: str | None) -> str:
    if label is None:
        return ANALYTICAL_SOURCE
    return f"II and latency: {label}; resources: analytical (FINN resource models, bnhw folding)"

