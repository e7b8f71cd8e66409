"""Run by tests/test_distributed.py under torchrun: one data-parallel gradient (train.distributed: shard, parallel,
weighted) of the tiny flow on real poses vs the one-process gradient of the whole batch, computed on every rank.
Rank 0 writes {batch size: [relative error weighted, relative error with equal weights]} to argv[2] as JSON."""

import json
import sys

import torch

from train import distributed
from train.augment import Augmentation
from train.config import load_config
from train.data import load_npz
from train.trainer import build_flow


def flat_grad(flow: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in flow.parameters()])


def main(data: str, out: str) -> None:
    distributed.init()
    cfg = load_config("tiny")
    gen = torch.Generator().manual_seed(0)
    flow = build_flow(cfg)
    x = load_npz(data).to_6d()
    aug = Augmentation(cfg.alpha, cfg.beta, cfg.noise)
    flow.set_normalization(aug(x, gen))
    with torch.no_grad():  # away from the zero-initialised identity, so every layer has a gradient
        for p in flow.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    result = {}
    for n in (185, 1):  # 92 / 93 poses per rank; 0 / 1 (rank 0's shard is empty)
        xb = aug(x[:n], gen)
        flow.zero_grad()
        (-flow.log_prob(xb).mean()).backward()  # the one-process gradient, before DDP wraps the flow
        ref = flat_grad(flow)
        errors = []
        for equal_weights in (False, True):
            step = distributed.parallel(flow, lambda idx, shard: -flow.log_prob(xb[idx][shard]).mean())
            shard = distributed.shard(n)
            n_shard = len(range(n)[shard])
            flow.zero_grad()
            loss = step(torch.arange(n), shard)
            (loss.nan_to_num() if equal_weights else distributed.weighted(loss, n_shard, n)).backward()
            errors.append(float((flat_grad(flow) - ref).abs().max() / ref.abs().max()))
        result[n] = errors
    if distributed.is_main():
        with open(out, "w") as f:
            json.dump(result, f)
    distributed.teardown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
