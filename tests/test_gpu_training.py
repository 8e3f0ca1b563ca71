"""Training steps on a CUDA GPU: bf16 autocast and channels-last against the plain float32 computation.

test_train.py runs the training command on the CPU (`ACCELERATE_USE_CPU=1`), where these speed-ups are forced; here
the same command runs on the GPU, as users run it there. Every test skips without CUDA; `benchmarks/gpu_check.sh` runs
them (`-k gpu`) on the GPU machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="training on the GPU needs a CUDA GPU")

# The CPU tests' short run (test_train.py): ddpm-tiny, T = 100, batch 16, 150 steps, compared in windows of 25 steps.
# TF32 and torch.compile stay off, so that the only difference between two runs is the one under test.
COMMON = [
    "--unet", "ddpm-tiny", "--train-batch-size", "16", "--learning-rate", "1e-3", "--lr-warmup-steps", "2",
    "--num-train-timesteps", "100", "--max-train-steps", "150", "--logging-steps", "1", "--checkpointing-steps", "150",
    "--sample-steps", "1000", "--num-sample-images", "4", "--sample-inference-steps", "5", "--report-to", "none",
    "--no-tf32", "--no-torch-compile",
]  # fmt: skip


def train_on_the_gpu(output_dir: Path, *arguments: str) -> list[float]:
    """`python -m ddpm_hf.train` on the GPU; the loss of each step."""
    env = {key: value for key, value in os.environ.items() if key != "ACCELERATE_USE_CPU"}
    result = subprocess.run(
        [sys.executable, "-m", "ddpm_hf.train", *COMMON, "--output-dir", str(output_dir), *arguments],
        capture_output=True, text=True, timeout=300, env={**env, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if "loss" in row]


def windows(losses: list[float], size: int = 25) -> list[float]:
    return [sum(losses[i : i + size]) / size for i in range(0, len(losses), size)]


@pytest.fixture(scope="module")
def plain_gpu_run(tmp_path_factory) -> tuple[Path, list[float]]:
    """The plain computation on the GPU: float32, contiguous layout."""
    output_dir = tmp_path_factory.mktemp("plain")
    return output_dir, train_on_the_gpu(output_dir, "--mixed-precision", "no", "--no-channels-last")


@needs_cuda
def test_bf16_training_steps_on_the_gpu_follow_the_float32_loss_curve(plain_gpu_run, tmp_path):
    _, plain = plain_gpu_run
    bf16 = train_on_the_gpu(tmp_path, "--mixed-precision", "bf16", "--no-channels-last")
    assert len(bf16) == len(plain) == 150
    bf16, plain = windows(bf16), windows(plain)
    assert bf16 == pytest.approx(plain, rel=0.05)
    assert bf16[-1] < 0.8 * bf16[0] and plain[-1] < 0.8 * plain[0]
    summary = json.loads((tmp_path / "training_summary.json").read_text())
    assert summary["mixed_precision"] == "bf16"


@needs_cuda
def test_channels_last_training_steps_on_the_gpu_follow_the_plain_ones(plain_gpu_run, tmp_path):
    """The first step's loss is the plain run's up to the convolutions' rounding (same weights, batch and noise); the
    mean loss of every window of 25 steps follows it within 5%; the checkpoint holds contiguous tensors."""
    plain_dir, plain = plain_gpu_run
    channels_last = train_on_the_gpu(tmp_path, "--mixed-precision", "no", "--channels-last")
    assert channels_last[0] == pytest.approx(plain[0], rel=1e-3)  # cuDNN convolutions: TF32 unless turned off
    assert windows(channels_last) == pytest.approx(windows(plain), rel=0.05)
    summary = json.loads((tmp_path / "training_summary.json").read_text())
    assert (
        summary["speedups"]["channels_last"]
        and not json.loads((plain_dir / "training_summary.json").read_text())["speedups"]["channels_last"]
    )
    model = load_file(tmp_path / "checkpoints" / "checkpoint-0000150" / "model.safetensors")
    assert all(tensor.is_contiguous() for tensor in model.values())
