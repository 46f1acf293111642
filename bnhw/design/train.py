"""Supernet training (NAS-BNN Sec. 3.3), BN recalibration and subnet evaluation.

Each step follows the sandwich rule: the largest subnet (the teacher), the
smallest and ``num_random`` random subnets are run on the same batch and

    L = CE(y_teacher, Y) + KL(y_smallest || y_teacher) + sum_i KL(y_random_i || y_teacher)   (Eq. 4)

with the teacher's soft labels detached.  The teacher is the Bi-Teacher by
default: the largest subnet with full-precision weights and binary
activations (FWBA); ``teacher="bwba"`` uses the largest binary subnet and
``teacher="none"`` trains every subnet on the labels (no distillation), for
ablations.  Adam with a cosine learning-rate schedule.

Training runs on one process or under ``torchrun``: the step is one module
(:class:`SandwichStep`) wrapped in ``DistributedDataParallel`` (gloo on
CPUs, NCCL on GPUs); every rank samples the same subnets and takes its share
of each global batch.  A checkpoint is written atomically after every epoch;
``resume=True`` continues after the last finished epoch.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import distributed as dist_util
from ..data.datasets import augment_batch
from ..errors import BnhwError
from ..spec import ArchSpec, atomic_write_bytes
from .supernet import BinarySupernet

TEACHERS = ("fwba", "bwba", "none")


@dataclass
class TrainConfig:
    epochs: int = 4
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 5e-6
    teacher: str = "fwba"        # Bi-Teacher (FWBA), "bwba", or "none" (no distillation)
    num_random: int = 2
    seed: int = 0
    #: the first ``warmup_epochs`` of ``epochs`` train the teacher (largest subnet) alone on the labels, so the
    #: sandwich rule's students distil from a teacher that already knows something
    warmup_epochs: int = 0

    def validate(self) -> None:
        if self.teacher not in TEACHERS:
            raise BnhwError(f"teacher must be one of {TEACHERS}, got {self.teacher!r}")
        if self.epochs < 0 or self.batch_size < 1 or not self.lr > 0:
            raise BnhwError("epochs must be >= 0, batch size >= 1 and the learning rate > 0")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise BnhwError(f"warm-up epochs must be in 0..epochs ({self.epochs}), got {self.warmup_epochs}")


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; anything else, or CUDA on a machine
    without it, is a one-line :class:`BnhwError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise BnhwError(f"--device {name!r}: not a device (use auto, cpu, cuda or cuda:N)") from None
    if dev.type not in ("cpu", "cuda"):
        raise BnhwError(f"--device {name!r}: only cpu and cuda are supported")
    if dev.type == "cuda" and (not torch.cuda.is_available()
                               or (dev.index is not None and dev.index >= torch.cuda.device_count())):
        raise BnhwError(f"--device {name!r}: no such CUDA device on this machine (use --device cpu or auto)")
    return dev


def adam(params, lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam with PyTorch's fused kernel where the parameters' device has one (CPU and CUDA: one pass over
    all weights per step instead of a dozen elementwise passes; the update is the same Adam update)."""
    params = [p for p in params]
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def kd_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """KL(teacher || student) on soft labels, the distillation term of Eq. 4."""
    return F.kl_div(F.log_softmax(student, 1), F.softmax(teacher.detach(), 1), reduction="batchmean")


class SandwichStep(nn.Module):
    """One sandwich-rule forward: returns the summed loss of Eq. 4 and the per-subnet losses."""

    def __init__(self, supernet: BinarySupernet, teacher: str = "fwba"):
        super().__init__()
        self.supernet = supernet
        self.teacher = teacher

    def forward(self, x: Tensor, y: Tensor, specs: list[ArchSpec]) -> tuple[Tensor, Tensor]:
        largest, others = specs[0], specs[1:]
        t = self.supernet(x, largest, binary_weights=self.teacher != "fwba")
        losses = [F.cross_entropy(t, y)]
        for s in others:
            out = self.supernet(x, s)
            losses.append(F.cross_entropy(out, y) if self.teacher == "none" else kd_loss(out, t))
        stacked = torch.stack(losses)
        return stacked.sum(), stacked.detach()


def sandwich_specs(supernet: BinarySupernet, rng: random.Random, num_random: int) -> list[ArchSpec]:
    sp = supernet.space
    n = supernet.num_classes
    specs = [sp.largest(), sp.smallest()] + [sp.sample(rng) for _ in range(num_random)]
    return [s.replace(num_classes=n, name="") for s in specs]


def batches(n: int, batch_size: int, generator: torch.Generator, drop_last: bool = True) -> Iterator[Tensor]:
    perm = torch.randperm(n, generator=generator)
    stop = n - (n % batch_size) if drop_last and n >= batch_size else n
    for i in range(0, stop, batch_size):
        yield perm[i:i + batch_size]


# ----------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------
def save_training_checkpoint(path: Path, **state) -> None:
    """Atomically save a resumable training state; ``weights`` holds the trained module's state dict.

    ``state`` must be plain data -- tensors, numbers, strings, ``None`` and lists / tuples / dicts of
    them (module, optimizer and scheduler state dicts are) -- since :func:`load_training_checkpoint`
    reads it with ``torch.load(weights_only=True)``; anything else (a Python or NumPy RNG state) goes
    in as a tensor or a JSON string.
    """
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


class TrainingState(dict):
    """A training state read by :func:`load_training_checkpoint`; ``path`` is the file it came from."""

    path: Path


def load_training_checkpoint(path: Path) -> TrainingState:
    """Read a :func:`save_training_checkpoint` file safely (``torch.load(weights_only=True)``: a crafted
    pickle is refused, never executed); every failure is a one-line :class:`BnhwError` naming ``path``."""
    from ..quant.checkpoint import safe_torch_load

    path = Path(path)
    if not path.is_file():
        raise BnhwError(f"{path}: no such checkpoint")
    state = safe_torch_load(path, "not a bnhw training state")
    if not isinstance(state, dict) or not isinstance(state.get("weights"), dict):
        raise BnhwError(f"{path}: not a bnhw training state (no weights)")
    if not all(isinstance(v, Tensor) for v in state["weights"].values()):
        raise BnhwError(f"{path}: not a bnhw training state (non-tensor weights)")
    if not isinstance(state.get("epoch"), int) or not isinstance(state.get("history", []), list):
        raise BnhwError(f"{path}: not a bnhw training state (bad or missing epoch / history)")
    out = TrainingState(state)
    out.path = path
    return out


def restore_training_state(state: dict, **stateful: Any) -> tuple[int, list[dict]]:
    """Load each ``stateful`` object (module, optimizer, scheduler) from ``state[name]`` of a
    :func:`load_training_checkpoint` dict; returns the epochs done and the history so far.  State that
    does not fit the objects raises a one-line :class:`BnhwError`."""
    where = getattr(state, "path", "training state")
    for name, obj in stateful.items():
        try:
            obj.load_state_dict(state[name])
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError, IndexError) as e:
            detail = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
            raise BnhwError(f"{where}: its {name} state does not fit this run ({type(e).__name__}"
                            f"{': ' + detail if detail else ''})") from None
    return int(state["epoch"]), list(state.get("history", []))


Progress = Callable[[str, dict], None]


def train_supernet(supernet: BinarySupernet, train_set, config: TrainConfig, checkpoint: Path | None = None,
                   resume: bool = False, progress: Progress | None = None,
                   extra: dict | None = None) -> list[dict]:
    """Train ``supernet`` on ``train_set`` (an :class:`~bnhw.data.datasets.ImageSet`); returns per-epoch logs."""
    config.validate()
    report = progress or (lambda event, info: None)
    world, rank = dist_util.world_size(), dist_util.rank()
    step_module: nn.Module = SandwichStep(supernet, config.teacher)
    opt = adam(supernet.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    device = next(supernet.parameters()).device
    x_all, y_all = (t.to(device) for t in train_set.tensors())
    steps_per_epoch = max(1, len(y_all) // config.batch_size)
    total = max(1, config.epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    history: list[dict] = []
    start = 0
    if resume and checkpoint is not None and checkpoint.exists():
        st = load_training_checkpoint(checkpoint)
        train_config = st.get("train_config")
        if not isinstance(train_config, dict) or train_config.get("batch_size") != config.batch_size:
            raise BnhwError(f"{checkpoint}: was trained with another batch size; resume with the same settings")
        start, history = restore_training_state(st, weights=supernet, optimizer=opt, scheduler=sched)
        report("resumed", {"epoch": start})
    if world > 1:
        step_module = dist_util.wrap_ddp(step_module)

    for epoch in range(start, config.epochs):
        supernet.train()
        gen = torch.Generator().manual_seed(config.seed * 1000003 + epoch)
        aug_gen = torch.Generator().manual_seed(config.seed * 7919 + epoch)
        rng = random.Random(config.seed * 104729 + epoch)
        sums = None
        n = 0
        for step, idx in enumerate(batches(len(y_all), config.batch_size, gen)):
            idx = idx.to(device)
            x = augment_batch(x_all[idx], getattr(train_set, "augment", "none"), aug_gen)
            y = y_all[idx]
            x, y = x[rank::world], y[rank::world]
            specs = sandwich_specs(supernet, rng, config.num_random)
            if epoch < config.warmup_epochs:
                specs = specs[:1]          # teacher warm-up: the largest subnet alone, on the labels
            opt.zero_grad(set_to_none=True)
            loss, parts = step_module(x, y, specs)
            # DDP averages gradients over ranks; each rank's loss is its shard's mean
            loss.backward()
            opt.step()
            sched.step()
            parts = dist_util.mean_over_ranks(parts)
            sums = parts if sums is None else sums + parts
            n += 1
            report("step", {"epoch": epoch + 1, "epochs": config.epochs, "step": step + 1,
                            "steps": steps_per_epoch, "loss": float(parts.sum())})
        log = {"epoch": epoch + 1, "phase": "teacher warm-up" if epoch < config.warmup_epochs else "sandwich",
               "lr": sched.get_last_lr()[0],
               "loss_teacher": float(sums[0] / n) if sums is not None else float("nan"),   # None iff n == 0
               "loss_students": [float(v / n) for v in sums[1:]] if sums is not None else []}
        history.append(log)
        if checkpoint is not None and rank == 0:
            save_training_checkpoint(checkpoint, weights=supernet.state_dict(), optimizer=opt.state_dict(),
                                     scheduler=sched.state_dict(), epoch=epoch + 1, history=history,
                                     train_config=asdict(config), **(extra or {}))
        dist_util.barrier()
        report("epoch", log)
    return history


# ----------------------------------------------------------------------------
# BN recalibration and accuracy of a subnet
# ----------------------------------------------------------------------------
class BoundSubnet(nn.Module):
    """A supernet with one subnet selected, callable as ``model(x)``."""

    def __init__(self, supernet: BinarySupernet, spec: ArchSpec):
        super().__init__()
        self.supernet = supernet
        self.spec = supernet.subnet_spec(spec)

    def forward(self, x: Tensor) -> Tensor:
        return self.supernet(x, self.spec)


@torch.no_grad()
def scores(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 256) -> tuple[float, float]:
    """``(accuracy, loss)`` of ``model`` (put in eval mode) on (x, y); the loss is the mean cross-entropy.

    The loss ranks models far more steadily than the accuracy on a few hundred images: every image adds a
    continuous amount, where the accuracy moves only with the few images near a decision boundary."""
    model.eval()
    device = next(model.parameters()).device
    correct, loss = 0, 0.0
    for i in range(0, len(y), batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        logits = model(xb)
        correct += int((logits.argmax(1) == yb).sum())
        loss += float(F.cross_entropy(logits.float(), yb, reduction="sum"))
    n = max(1, len(y))
    return correct / n, loss / n


def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 256) -> float:
    return scores(model, x, y, batch_size)[0]


def calibration_batches(x: Tensor, n_batches: int, batch_size: int, seed: int = 0) -> list[Tensor]:
    """Fixed random training batches used for every BN recalibration (same for all subnets)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(x), generator=g)
    return [x[idx[i * batch_size:(i + 1) * batch_size]] for i in range(n_batches) if i * batch_size < len(x)]


def evaluate_subnet(supernet: BinarySupernet, spec: ArchSpec, calib: list[Tensor], x: Tensor, y: Tensor) -> float:
    """Recalibrate the subnet's BN statistics on ``calib`` and return its accuracy on (x, y)."""
    from ..quant.model import recalibrate_bn

    bound = BoundSubnet(supernet, spec)
    device = next(supernet.parameters()).device
    recalibrate_bn(bound, [b.to(device) for b in calib])
    return accuracy(bound, x, y)
