"""Data-parallel training across processes (torchrun / DDP), and the single-process case as world size 1.

torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` in every process it starts; that is the only
signal read here, so the same ``cloudlulc train`` command runs alone or as one of N replicas. NCCL is
used between GPUs, gloo between CPU processes (which is how the tests run it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

# Long enough for rank 0 to score the validation split and write a checkpoint while the others wait.
_COLLECTIVE_TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class Replica:
    """This process's place among the training processes."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone validates, checkpoints, logs and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one replica: collectives are needed."""
        return self.world_size > 1


def replica_from_environment() -> Replica:
    """The replica torchrun described in the environment, or the lone process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Replica()
    return Replica(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world_size)


def replica_device(replica: Replica, requested: str) -> torch.device:
    """The device of this replica: its own GPU under DDP, else what the config asked for (``auto`` picks CUDA)."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda" and replica.distributed:
        device = torch.device("cuda", replica.local_rank)
        torch.cuda.set_device(device)
    return device


@contextmanager
def process_group(replica: Replica, device: torch.device) -> Iterator[None]:
    """Join (and later leave) the process group when there is more than one replica."""
    if not replica.distributed or dist.is_initialized():
        yield
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=replica.rank, world_size=replica.world_size, timeout=_COLLECTIVE_TIMEOUT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def barrier(replica: Replica) -> None:
    """Wait for every replica (no-op alone)."""
    if replica.distributed:
        dist.barrier()


def sum_across(replica: Replica, values: list[float]) -> list[float]:
    """Element-wise sum of ``values`` over all replicas (identity alone)."""
    if not replica.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def process_count(requested: str, device: str) -> int:
    """How many training processes to run: ``auto`` is one per GPU when more than one is present."""
    if requested != "auto":
        try:
            count = int(requested)
        except ValueError:
            raise ValueError(f"--processes must be 'auto' or a positive integer, not {requested!r}") from None
        if count < 1:
            raise ValueError(f"--processes must be at least 1, not {count}")
        return count
    if device == "cpu" or not torch.cuda.is_available():
        return 1
    return max(1, torch.cuda.device_count())


def relaunch_under_torchrun(processes: int, arguments: Sequence[str]) -> int:
    """Run ``cloudlulc <arguments>`` as ``processes`` replicas on this machine; return torchrun's exit code."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        "cloudlulc",
        *arguments,
    ]
    return subprocess.call(command)
