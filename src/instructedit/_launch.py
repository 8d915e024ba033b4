"""Jobs of several processes: what torchrun and ``accelerate launch`` start, joined into one."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["job_state", "launched_without_cuda", "use_cpu"]


def launched_without_cuda() -> bool:
    """Whether torchrun or ``accelerate launch`` started this process on a machine without CUDA.

    accelerate joins such processes into one job (over gloo) only when told to run on the CPU;
    without it each process runs alone, all of them calling themselves process 0."""
    import torch

    launched = "LOCAL_RANK" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1
    return launched and not torch.cuda.is_available()


def use_cpu() -> bool:
    """The ``cpu`` flag to give accelerate: set by ``accelerate launch --cpu``
    (``ACCELERATE_USE_CPU``) or by a launch on a machine without CUDA."""
    explicit = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return explicit or launched_without_cuda()


def job_state() -> Any:
    """accelerate's ``PartialState`` of this process's job: its process index and count, its
    device, and whether it is the main process (one process alone is a job of one)."""
    from accelerate import PartialState

    return PartialState(cpu=use_cpu())
