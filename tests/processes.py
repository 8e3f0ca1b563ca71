"""Helpers for tests that start real processes: free loopback ports and `accelerate launch` of CPU processes."""

from __future__ import annotations

import socket
import sys


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_launch(num_processes: int, module: str, *arguments: str) -> list[str]:
    """`accelerate launch -m module` of several CPU processes (gloo): torchrun's launcher (`--multi_gpu`), with
    Accelerate told to use the CPU by `ACCELERATE_USE_CPU=1` in the environment of the command."""
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), "-m", module, *arguments,
    ]  # fmt: skip
