"""``bnhw train`` / ``bnhw eval``: train one architecture, evaluate a checkpoint.

Two schemes:

* ``finetune`` (NAS-BNN pipeline 2, paper 003 Sec. 3.4): the subnet
  inherits its weights from a supernet checkpoint written by ``bnhw search``
  (extracted exactly), then is fine-tuned with Adam at a small learning rate
  and a cosine schedule;
* ``scratch``: from a fresh initialisation with the "minimal
  regularization" scheme of BNAS v2 (paper 001 Sec. 5.2): Adam, no weight
  decay, cosine schedule, no colour jitter (only the light geometric
  augmentation of the data source).

The standalone Brevitas model is what is trained, so the result exports to
QONNX directly.  Runs under ``torchrun`` with DistributedDataParallel (each
rank takes its share of every global batch).  A state file is written
atomically after every epoch; ``resume=True`` continues after the last
finished epoch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import distributed as dist_util
from ..data.datasets import augment_batch, load_data
from ..design.supernet import BinarySupernet, SupernetConfig
from ..design.train import (
    adam,
    batches,
    calibration_batches,
    load_training_checkpoint,
    resolve_device,
    restore_training_state,
    save_training_checkpoint,
    scores,
)
from ..errors import BnhwError
from ..quant.checkpoint import load_model, save_checkpoint
from ..quant.layers import identity_slopes
from ..quant.model import BinaryNet, Network, build_network, recalibrate_bn
from ..spec import ArchSpec, atomic_write_text
from ..spec.cells import CellNetSpec
from ..spec.space import get_space

SCHEMES = ("finetune", "scratch")


@dataclass
class FitConfig:
    scheme: str = "scratch"
    epochs: int = 4
    batch_size: int = 32
    lr: float | None = None            # default: 2e-3 from scratch, 2e-4 for fine-tuning
    weight_decay: float = 0.0          # minimal regularization: none
    seed: int = 0
    data: str = "digits"
    resolution: int = 32
    train_images: int | None = None
    #: "adam": Adam, cosine to 0 (BNAS v2's minimal-regularization scheme, with weight_decay 0);
    #: "sgd-onecycle": SGD with momentum 0.9, weight decay 3e-6 unless set, one-cycle learning rate
    #: between 4e-4 and 5e-2 (BNAS v2's standard scheme on CIFAR10, paper 001 Sec. 6.1);
    #: "sgd-restarts": SGD with momentum 0.9, weight decay 3e-5 unless set, cosine annealing with warm
    #: restarts every fifth of the run (BNAS v2's standard scheme on ImageNet: 250 epochs, cycles of 50)
    optimizer: str = "adam"
    device: str = "cpu"                # torch device of the training (auto: CUDA when present)

    def effective_lr(self) -> float:
        """The peak learning rate."""
        if self.lr is not None:
            return self.lr
        if self.optimizer == "sgd-restarts":
            return 0.1
        if self.optimizer == "sgd-onecycle":
            return 5e-2
        return 2e-3 if self.scheme == "scratch" else 2e-4


OPTIMIZERS = ("adam", "sgd-onecycle", "sgd-restarts")
ONECYCLE_MIN_RATIO = 4e-4 / 5e-2     # paper 001: "ranging from 5e-2 to 4e-4"
ONECYCLE_WARMUP = 0.3                # share of the run spent rising (as torch's OneCycleLR)


#: (batches, batch size) of the clean training images BN statistics are recalibrated on -- as the search does for
#: every inherited subnet (``SearchOptions.calib_batches`` / ``calib_batch_size``)
CALIBRATION = (2, 128)


def one_cycle(step: int, total: int, low: float = ONECYCLE_MIN_RATIO, warmup: float = ONECYCLE_WARMUP) -> float:
    """The one-cycle factor of the peak rate at ``step`` of ``total``: a cosine rise from ``low`` to 1
    over the first ``warmup`` of the run, then a cosine fall back to ``low`` at ``total``."""
    s = min(max(step, 0), total)
    up = max(1.0, warmup * total)
    if s < up:
        return low + (1 - low) * 0.5 * (1 - math.cos(math.pi * s / up))
    down = max(1.0, total - up)
    return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * min(1.0, (s - up) / down)))


def _optimizer(model: torch.nn.Module, cfg: FitConfig, total: int):
    """The optimizer and the per-step learning-rate schedule of ``cfg``."""
    if cfg.optimizer == "sgd-onecycle":
        wd = cfg.weight_decay if cfg.weight_decay else 3e-6
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=cfg.effective_lr(), momentum=0.9,
                                                     weight_decay=wd)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: one_cycle(s, total))
    if cfg.optimizer == "sgd-restarts":
        wd = cfg.weight_decay if cfg.weight_decay else 3e-5
        opt = torch.optim.SGD(model.parameters(), lr=cfg.effective_lr(), momentum=0.9, weight_decay=wd)
        cycle = max(1, total // 5)
        return opt, torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.5 * (1 + math.cos(math.pi * (s % cycle) / cycle)))
    opt = adam(model.parameters(), lr=cfg.effective_lr(), weight_decay=cfg.weight_decay)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))


def model_from_supernet(spec: ArchSpec | CellNetSpec, supernet_ckpt: Path) -> BinaryNet:
    """Extract ``spec``'s weights from a supernet checkpoint written by ``bnhw search``."""
    st = load_training_checkpoint(supernet_ckpt)
    try:
        space = get_space(st["space"]).for_task(int(st["num_classes"]))
        sn = BinarySupernet(space, SupernetConfig(**st.get("supernet_config", {})))
        sn.load_state_dict(st["weights"])
    except (KeyError, RuntimeError, TypeError) as e:
        raise BnhwError(f"{supernet_ckpt}: not a supernet checkpoint of a known space ({type(e).__name__})") from None
    if spec.kind != "blocks" or spec.space != space.name:   # a cell network's space is never a supernet's
        raise BnhwError(f"{spec.name or 'the architecture'} is not in the supernet's space {space.name}")
    return sn.extract(spec.replace(num_classes=space.num_classes))


def fit(spec: ArchSpec | CellNetSpec, cfg: FitConfig, out: Path, *, supernet: Path | None = None, resume: bool = False,
        progress: Callable[[str, dict], None] | None = None, initial: BinaryNet | None = None,
        init: Path | None = None) -> dict:
    """Train ``spec`` into ``out`` (see the module docstring); ``initial``: the model to start from, already
    extracted from the ``supernet`` checkpoint's weights (saves reading it again); ``init``: a model
    checkpoint whose weights ``spec``'s network starts from (its precision may differ from ``spec``'s:
    a float-residual model fine-tuned in fixed point), fine-tuned like a supernet's subnet."""
    if cfg.scheme not in SCHEMES:
        raise BnhwError(f"scheme must be one of {SCHEMES}")
    if cfg.optimizer not in OPTIMIZERS:
        raise BnhwError(f"optimizer must be one of {OPTIMIZERS}")
    if cfg.scheme == "finetune" and supernet is None and init is None and initial is None:
        raise BnhwError("fine-tuning needs --supernet (the supernet.pt of a bnhw search) or --init (a model.pt)")
    report = progress or (lambda e, i: None)
    data = load_data(cfg.data, cfg.resolution, seed=cfg.seed)
    if cfg.train_images is not None:
        data.train = data.train.subset(range(min(cfg.train_images, len(data.train))))
    spec = spec.replace(num_classes=data.num_classes)
    torch.manual_seed(cfg.seed)
    model: Network
    if initial is not None:
        model = initial.train()
    elif init is not None:
        model = load_model(spec, init).train()
    else:
        model = model_from_supernet(spec, supernet) if supernet is not None \
            else identity_slopes(build_network(spec)).train()
    device = resolve_device(cfg.device)
    model.to(device)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "train_state.pt"
    x_all, y_all = (t.to(device) for t in data.train.tensors())
    xv, yv = data.val.tensors()
    xt, yt = data.test.tensors()
    steps = max(1, len(y_all) // cfg.batch_size)
    total = max(1, cfg.epochs * steps)
    opt, sched = _optimizer(model, cfg, total)
    history: list[dict] = []
    start = 0
    if resume and state_path.exists():
        st = load_training_checkpoint(state_path)
        start, history = restore_training_state(st, weights=model, optimizer=opt, scheduler=sched)
        report("resumed", {"epoch": start})
    net: torch.nn.Module = model
    if dist_util.world_size() > 1:
        net = dist_util.wrap_ddp(model)
    rank, world = dist_util.rank(), dist_util.world_size()
    # BN statistics on clean (not augmented) training images, the same batches the search recalibrates on
    calib = calibration_batches(x_all, *CALIBRATION, cfg.seed)
    if start == 0 and (supernet is not None or init is not None):
        recalibrate_bn(model, calib)
        # epoch 0: the inherited subnet itself, as the search scored it (val) and on the test split
        (va, vl), (ta, tl) = scores(model, xv, yv), scores(model, xt, yt)
        history.append({"epoch": 0, "val_accuracy": va, "val_loss": vl, "test_accuracy": ta, "test_loss": tl})
    for epoch in range(start, cfg.epochs):
        model.train()
        gen = torch.Generator().manual_seed(cfg.seed * 1000003 + epoch)
        aug = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)
        total_loss, n = 0.0, 0
        for i, idx in enumerate(batches(len(y_all), cfg.batch_size, gen)):
            idx = idx.to(device)
            x = augment_batch(x_all[idx], getattr(data.train, "augment", "none"), aug)[rank::world]
            y = y_all[idx][rank::world]
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += float(dist_util.mean_over_ranks(loss.detach()))
            n += 1
            report("step", {"epoch": epoch + 1, "epochs": cfg.epochs, "step": i + 1, "steps": steps,
                            "loss": float(loss.detach())})
        log = {"epoch": epoch + 1, "loss": total_loss / max(1, n), "val_accuracy": scores(model, xv, yv)[0]}
        history.append(log)
        if dist_util.is_main():
            save_training_checkpoint(state_path, weights=model.state_dict(), optimizer=opt.state_dict(),
                                     scheduler=sched.state_dict(), epoch=epoch + 1, history=history)
        dist_util.barrier()
        report("epoch", log)
    # the running statistics of training mode saw augmented images at the last steps' rates: recalibrate them
    # on clean training images, as the search does for every inherited subnet
    recalibrate_bn(model, calib)
    (va, vl), (ta, tl) = scores(model, xv, yv), scores(model, xt, yt)
    result = {"arch": spec.short(), "scheme": cfg.scheme, "supernet": str(supernet) if supernet else None,
              "init": str(init) if init else None,
              "config": asdict(cfg), "lr": cfg.effective_lr(), "history": history,
              "val_accuracy": va, "test_accuracy": ta, "val_loss": vl, "test_loss": tl,
              "data": data.describe()}
    if dist_util.is_main():
        save_checkpoint(model.eval(), out / "model.pt", scheme=cfg.scheme, test_accuracy=result["test_accuracy"])
        spec.save(out / "arch.json")
        atomic_write_text(out / "result.json", json.dumps(result, indent=2) + "\n")
    return result


def evaluate_checkpoint(arch: str, checkpoint: Path, data: str, resolution: int, split: str) -> dict:
    from ..spec import load_spec

    spec = load_spec(arch)
    bundle = load_data(data, resolution)
    model = load_model(spec.replace(num_classes=bundle.num_classes), checkpoint)
    sets = {"test": bundle.test, "val": bundle.val, "train": bundle.train}
    x, y = sets[split].tensors()
    return {"split": split, "images": len(y), "accuracy": scores(model, x, y)[0], "data": bundle.describe()}
