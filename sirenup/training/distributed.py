"""Training on several processes with PyTorch's own engine: torchrun + DistributedDataParallel.

``torchrun --nproc_per_node=N -m sirenup train ...`` starts N copies of the command with
RANK, LOCAL_RANK and WORLD_SIZE set; each joins the process group (gloo on the CPU, nccl on
CUDA), trains on its share of the global batch, and DDP averages the gradients, so every rank
holds the same weights after every step. Without those variables everything here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from sirenup.errors import OptionValueError


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, global_batch: int) -> int:
        """This rank's part of the global batch (which must split evenly)."""
        if global_batch % self.world:
            raise OptionValueError(f"{global_batch} does not split evenly over {self.world} "
                                   "processes", option="batch")
        return global_batch // self.world


_current = Distributed()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


DEFAULT_TIMEOUT_S = 600  # train --dist-timeout: torch's own default waits 30 minutes


def init(device: torch.device, timeout_s: float = DEFAULT_TIMEOUT_S) -> Distributed:
    """Join the process group torchrun set up -> this process's place in it.

    ``device`` is what --device asked for; on CUDA each process takes GPU LOCAL_RANK.
    ``timeout_s``: how long a collective (a step's gradients, a barrier) waits for a rank
    that stopped before the run fails (train --dist-timeout), instead of torch's 30 minutes.
    """
    global _current
    if not launched_by_torchrun():
        _current = Distributed(device=device)
        return _current
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                timeout=timedelta(seconds=timeout_s))
    _current = Distributed(rank=rank, world=world, local_rank=local_rank, device=device)
    return _current


def current() -> Distributed:
    return _current


def shutdown() -> None:
    global _current
    if dist.is_initialized():
        dist.destroy_process_group()
    _current = Distributed()


def wrap(model: nn.Module, info: Distributed) -> nn.Module:
    """``model`` itself, or a DistributedDataParallel wrapper that averages its gradients."""
    if not info.enabled:
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def gather_states(state: torch.Tensor, info: Distributed) -> list[torch.Tensor]:
    """Every rank's RNG state (collective: all ranks call it) -> list indexed by rank."""
    states: list = [None] * info.world
    dist.all_gather_object(states, state)
    return states


def barrier(info: Distributed) -> None:
    if info.enabled:
        dist.barrier()
