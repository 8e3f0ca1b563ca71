"""What every benchmark record holds (date, machine, versions, command) and how it is printed and written."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import diffusers
import torch

import ddpm_hf


def machine_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def record_header(benchmark: str, device: torch.device) -> dict[str, Any]:
    """The fields every record starts with: what ran, where, with which versions, and the command line."""
    return {
        "benchmark": benchmark,
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_name(device),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "ddpm_hf": ddpm_hf.__version__,
        "threads": torch.get_num_threads(),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
    }


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work (a no-op on the CPU), so that wall times measure the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def write_record(record: dict[str, Any], path: Path) -> None:
    """Write the record as JSON and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
