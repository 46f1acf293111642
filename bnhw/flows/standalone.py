"""After a search: train a sample of subnets on their own, and measure how well the supernet ranked them.

``bnhw search`` scores every architecture with weights inherited from the
supernet.  Here a sample of the evaluated architectures, spread over the OPs
range and including the best, is trained stand-alone with one fixed short
schedule (by default NAS-BNN's pipeline 2: inherited weights, Adam at
2e-4, cosine; or from scratch) and evaluated on the test split.  Kendall's tau between the
inherited validation accuracy and the stand-alone test accuracy says how far
the search's ranking can be trusted; the best architecture's stand-alone
run is its fine-tuned model (``best_finetuned.pt``).

Two more taus say how much that number can say.  The same between the
losses (mean cross-entropy: every image counts, not only those near a
decision boundary), and the *split ceiling*: tau between the inherited
subnets' own val and test accuracies (and losses).  Where subnets differ by
less than a few hundred images can resolve, the ceiling is low and no
ranking, however good, scores a high accuracy tau.

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
from ..data.datasets import load_data
from ..design.evolution import Candidate, spec_key
from ..design.ranking import RankCorrelation, kendall, spread_sample
from ..design.supernet import BinarySupernet
from ..design.train import calibration_batches, scores
from ..errors import BnhwError
from ..quant.model import BinaryNet, recalibrate_bn
from .train import CALIBRATION, FitConfig, fit

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
    rows: list[dict] = field(default_factory=list)     # one per subnet: arch, ops, inherited / stand-alone scores
    correlation: RankCorrelation | None = None          # accuracies; None: fewer than 2 subnets
    loss_correlation: RankCorrelation | None = None     # inherited val loss vs stand-alone test loss
    ceiling: RankCorrelation | None = None              # inherited val vs inherited test accuracy (same models)
    loss_ceiling: RankCorrelation | None = None         # the same for the losses
    best: dict | None = None                            # the best architecture's row (None: epochs 0)

    def to_dict(self) -> dict:
        c = self.correlation
        return {"rows": self.rows, "kendall_tau": c.tau if c else None, "kendall_p": c.p_value if c else None,
                "tau_subnets": c.n if c else 0}

    def describe_ceiling(self) -> str:
        """One line on what the taus can say (empty without a sample)."""
        if self.correlation is None or self.loss_correlation is None or self.ceiling is None \
                or self.loss_ceiling is None:
            return ""
        return (f"on losses {self.loss_correlation.tau:+.3f} (p = {self.loss_correlation.p_value:.3g}); the splits "
                f"alone rank the same inherited subnets at {self.ceiling.tau:+.3f} (accuracy) and "
                f"{self.loss_ceiling.tau:+.3f} (loss), the ceiling of what these {self.correlation.n} subnets can "
                f"show")


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
    inherit = opts.init == "inherit"
    for i, cand in enumerate(sample):
        run = out / "standalone" / f"{i:02d}"
        res = _finished(run, cand, inherit)
        if res is None:
            cfg = FitConfig(scheme="finetune" if opts.init == "inherit" else "scratch", epochs=opts.epochs,
                            batch_size=batch_size, lr=opts.lr, seed=seed, data=data, resolution=resolution,
                            train_images=train_images, device=device)

            def progress(name: str, info: dict, i: int = i) -> None:
                emit("standalone." + name, dict(info, subnet=i + 1, subnets=len(sample)))

            initial = supernet.extract(supernet.subnet_spec(cand.spec)) if inherit else None
            res = fit(cand.spec, cfg, run, supernet=supernet_ckpt if inherit else None, resume=True,
                      progress=progress, initial=initial)
        # the inherited subnet's scores: fit's epoch 0 when it started from them, else evaluated here the same way
        inh = res["history"][0] if inherit else inherited_scores(
            supernet.extract(supernet.subnet_spec(cand.spec)), data=data, resolution=resolution, seed=seed,
            train_images=train_images)
        is_best = spec_key(cand.spec) == spec_key(best.spec)
        row = {"arch": cand.spec.short(), "ops": cand.ops, "inherited_val_accuracy": cand.score,
               "inherited_test_accuracy": inh["test_accuracy"], "inherited_val_loss": inh["val_loss"],
               "inherited_test_loss": inh["test_loss"],
               "standalone_val_accuracy": res["val_accuracy"], "standalone_test_accuracy": res["test_accuracy"],
               "standalone_val_loss": res["val_loss"], "standalone_test_loss": res["test_loss"],
               "best": is_best, "dir": str(run)}
        result.rows.append(row)
        if is_best:
            result.best = row
            if dist_util.is_main():          # under torchrun the main process wrote model.pt
                shutil.copyfile(run / "model.pt", out / "best_finetuned.pt.tmp")
                (out / "best_finetuned.pt.tmp").replace(out / "best_finetuned.pt")
        emit("standalone.done", dict(row, subnet=i + 1, subnets=len(sample)))
    if len(result.rows) >= 2:
        def col(name: str) -> list[float]:
            return [r[name] for r in result.rows]

        result.correlation = kendall(col("inherited_val_accuracy"), col("standalone_test_accuracy"))
        result.loss_correlation = kendall(col("inherited_val_loss"), col("standalone_test_loss"))
        result.ceiling = kendall(col("inherited_val_accuracy"), col("inherited_test_accuracy"))
        result.loss_ceiling = kendall(col("inherited_val_loss"), col("inherited_test_loss"))
    return result


def inherited_scores(model: BinaryNet, *, data: str, resolution: int, seed: int, train_images: int | None) -> dict:
    """An inherited subnet's val / test accuracy and loss, its BN recalibrated on the batches ``fit`` uses (what
    ``fit``'s epoch 0 records when it starts from inherited weights)."""
    bundle = load_data(data, resolution, seed=seed)
    x_train, _ = bundle.train.tensors()
    if train_images is not None:
        x_train = x_train[:train_images]
    device = next(model.parameters()).device
    recalibrate_bn(model, [b.to(device) for b in calibration_batches(x_train, *CALIBRATION, seed)])
    (va, vl), (ta, tl) = scores(model, *bundle.val.tensors()), scores(model, *bundle.test.tensors())
    return {"val_accuracy": va, "val_loss": vl, "test_accuracy": ta, "test_loss": tl}


def _finished(run: Path, cand: Candidate, inherit: bool) -> dict | None:
    """The result of a finished run of ``cand`` in ``run`` (None: not finished, or another architecture's)."""
    path = run / "result.json"
    if not (path.is_file() and (run / "model.pt").is_file()):
        return None
    try:
        res = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(res, dict) or res.get("arch") != cand.spec.short() or "test_loss" not in res:
        return None
    if inherit and not (res.get("history") and "test_loss" in res["history"][0]):
        return None                         # an older bnhw's run: without the inherited scores
    return res
