"""Run by tests/test_distributed.py, once alone and once under torchrun with 2 gloo ranks.

1. scores candidates of a freshly initialised (seeded, hence identical) supernet, split over the ranks;
2. one sandwich-rule step through DistributedDataParallel: loss parts and gradients;
3. one epoch of supernet training (the real loop), checkpoint written by rank 0.
"""

import json
import random
import sys
from pathlib import Path

import torch

from bnhw import distributed as dist_util
from bnhw.data.datasets import load_data
from bnhw.design.supernet import BinarySupernet
from bnhw.design.train import (
    SandwichStep,
    TrainConfig,
    calibration_batches,
    evaluate_subnet,
    sandwich_specs,
    train_supernet,
)
from bnhw.spec.space import get_space

out = Path(sys.argv[1])
dist_util.init_from_env()
torch.manual_seed(0)
torch.set_num_threads(1)
data = load_data("digits", 32)
space = get_space("nasbnn-cifar").for_task(10)
sn = BinarySupernet(space)
rank, world = dist_util.rank(), dist_util.world_size()

# 1. candidate evaluation split over ranks
calib = calibration_batches(data.train.tensors()[0], 1, 64)
xv, yv = data.val.tensors()
rng = random.Random(3)
specs = [space.sample(rng) for _ in range(5)]
scores = dist_util.gather_in_order([evaluate_subnet(sn, s, calib, xv, yv) for s in dist_util.split_for_rank(specs)],
                                   len(specs))

# 2. one DDP sandwich step on a global batch of 32
x, y = data.train.tensors()
x, y = x[:32], y[:32]
sn.train()
step = SandwichStep(sn)
if world > 1:
    step = dist_util.wrap_ddp(step)
loss, parts = step(x[rank::world], y[rank::world], sandwich_specs(sn, random.Random(0), 2))
loss.backward()
parts = dist_util.mean_over_ranks(parts)
grads = torch.cat([p.grad.flatten() for p in sn.parameters() if p.grad is not None])

# 3. the training loop itself
sn.zero_grad(set_to_none=True)
hist = train_supernet(sn, data.train.subset(range(64)), TrainConfig(epochs=1, batch_size=32),
                      checkpoint=out.with_suffix(".pt"))
if dist_util.is_main():
    json.dump({"world": world, "scores": scores, "parts": parts.tolist(), "grads": grads[::101].tolist(),
               "epochs": len(hist)}, open(out, "w"))
