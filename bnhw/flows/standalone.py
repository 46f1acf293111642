"""After a search: train a sample of subnets on their own, and measure how well the supernet ranked them.

``bnhw search`` scores every architecture with weights inherited from the
supernet.  Here a sample of the evaluated architectures, spread over the OPs
range and including the best, is trained stand-alone with one fixed short
schedule (by default NAS-BNN's pipeline 2: inherited weights, Adam at
2e-4, cosine; or from scratch) and evaluated on the test split.  Kendall's tau between the
inherited validation accuracy and the stand-alone test accuracy says how far
the search's ranking can be trusted; the best architecture's stand-alone
run is its fine-tuned model (``best_finetuned.pt``).

Each run lives in ``DIR/standalone/NN/`` (``bnhw train``'s files); a search
resumed after an interruption keeps the finished runs and continues the
unfinished one after its last epoch.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import distributed as dist_util
from ..design.evolution import Candidate, spec_key
from ..design.ranking import RankCorrelation, kendall, spread_sample
from ..design.supernet import BinarySupernet
from ..errors import BnhwError
from .train import FitConfig, fit

INITS = ("inherit", "scratch")


@dataclass
class StandaloneOptions:
    subnets: int = 8          # subnets trained stand-alone for Kendall's tau (0: only the best, no tau)
    epochs: int = 3           # epochs of each stand-alone run, the best's fine-tuning included (0: none)
    init: str = "inherit"     # "inherit": fine-tune from the supernet (NAS-BNN pipeline 2); "scratch"
    lr: float | None = None   # default: bnhw train's (2e-4 fine-tuning, 2e-3 from scratch)

    def validate(self) -> None:
        if self.init not in INITS:
            raise BnhwError(f"stand-alone init must be one of {INITS}, got {self.init!r}")
        if self.subnets < 0 or self.epochs < 0:
            raise BnhwError("stand-alone subnets and epochs must be >= 0")
        if self.subnets == 1:
            raise BnhwError("Kendall's tau needs at least 2 subnets (--tau-subnets 0 skips it)")

    def describe(self) -> str:
        how = "fine-tuned from the supernet's weights" if self.init == "inherit" else "trained from scratch"
        lr = self.lr if self.lr is not None else (2e-4 if self.init == "inherit" else 2e-3)
        return f"{how}, {self.epochs} epochs, Adam {lr:g} with a cosine schedule, test split"


@dataclass
class StandaloneResult:
    rows: list[dict] = field(default_factory=list)     # one per subnet: arch, ops, inherited / stand-alone accuracy
    correlation: RankCorrelation | None = None          # None: fewer than 2 subnets
    best: dict | None = None                            # the best architecture's row (None: epochs 0)

    def to_dict(self) -> dict:
        c = self.correlation
        return {"rows": self.rows, "kendall_tau": c.tau if c else None, "kendall_p": c.p_value if c else None,
                "tau_subnets": c.n if c else 0}


Event = Callable[[str, dict], None]


def train_standalone(out: Path, supernet_ckpt: Path, supernet: BinarySupernet, cands: Sequence[Candidate], best: Candidate,
                     opts: StandaloneOptions, *, data: str, resolution: int, batch_size: int, seed: int,
                     train_images: int | None, device: str = "cpu", event: Event | None = None) -> StandaloneResult:
    """Train the sample (see the module docstring) into ``out/standalone``; resumable.  ``supernet`` is the
    trained supernet in memory (the stand-alone runs start from its extracted weights), ``supernet_ckpt`` the
    file it was saved to (for the record)."""
    opts.validate()
    emit = event or (lambda name, info: None)
    if opts.epochs == 0:
        return StandaloneResult()
    sample = spread_sample(cands, best, opts.subnets) if opts.subnets else [best]
    emit("standalone.start", {"subnets": len(sample), "epochs": opts.epochs})
    result = StandaloneResult()
    for i, cand in enumerate(sample):
        run = out / "standalone" / f"{i:02d}"
        res = _finished(run, cand)
        if res is None:
            cfg = FitConfig(scheme="finetune" if opts.init == "inherit" else "scratch", epochs=opts.epochs,
                            batch_size=batch_size, lr=opts.lr, seed=seed, data=data, resolution=resolution,
                            train_images=train_images, device=device)

            def progress(name: str, info: dict, i: int = i) -> None:
                emit("standalone." + name, dict(info, subnet=i + 1, subnets=len(sample)))

            inherit = opts.init == "inherit"
            initial = supernet.extract(supernet.subnet_spec(cand.spec)) if inherit else None
            res = fit(cand.spec, cfg, run, supernet=supernet_ckpt if inherit else None, resume=True,
                      progress=progress, initial=initial)
        is_best = spec_key(cand.spec) == spec_key(best.spec)
        row = {"arch": cand.spec.short(), "ops": cand.ops, "inherited_val_accuracy": cand.score,
               "standalone_val_accuracy": res["val_accuracy"], "standalone_test_accuracy": res["test_accuracy"],
               "best": is_best, "dir": str(run)}
        result.rows.append(row)
        if is_best:
            result.best = row
            if dist_util.is_main():          # under torchrun the main process wrote model.pt
                shutil.copyfile(run / "model.pt", out / "best_finetuned.pt.tmp")
                (out / "best_finetuned.pt.tmp").replace(out / "best_finetuned.pt")
        emit("standalone.done", dict(row, subnet=i + 1, subnets=len(sample)))
    if len(result.rows) >= 2:
        result.correlation = kendall([r["inherited_val_accuracy"] for r in result.rows],
                                     [r["standalone_test_accuracy"] for r in result.rows])
    return result


def _finished(run: Path, cand: Candidate) -> dict | None:
    """The result of a finished run of ``cand`` in ``run`` (None: not finished, or another architecture's)."""
    path = run / "result.json"
    if not (path.is_file() and (run / "model.pt").is_file()):
        return None
    try:
        res = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(res, dict) or res.get("arch") != cand.spec.short():
        return None
    return res
