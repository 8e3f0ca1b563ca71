"""Sampling throughput: image-steps per second of ancestral sampling, ddpm_hf.DDPMPipeline against
diffusers.DDPMPipeline with the same UNet and the same scheduler configuration, measured in one run.

    python benchmarks/sample_throughput.py                                     # CPU: ddpm-tiny, small batch
    python benchmarks/sample_throughput.py --preset ddpm-cifar10 --batch-size 256 --steps 50 --dtype bf16   # GPU

An image-step is one network evaluation of one image: a batch of B images over S reverse steps is B·S image-steps;
FID-50k at 1000 steps is 5·10⁷ of them. Each pipeline draws once untimed (warm-up: allocations, kernels, compilation),
then `--repeats` times timed; the best time counts. On a GPU the peak memory of one call is reported too, and with
`--max-batch` the largest batch that fits (doubling until out of memory). Prints a table and writes JSON (`--output`).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import diffusers
import torch

import ddpm_hf


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(pipeline, batch_size: int, steps: int, device: torch.device, repeats: int) -> float:
    """The best wall time of `repeats` calls, after one untimed warm-up call."""
    generator = torch.Generator(device).manual_seed(0)
    pipeline(batch_size, generator=generator, num_inference_steps=min(steps, 2), output_type="np")
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        pipeline(batch_size, generator=generator, num_inference_steps=steps, output_type="np")
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def peak_memory(pipeline, batch_size: int, steps: int, device: torch.device) -> int | None:
    """Peak GPU memory (bytes) of one call; none on the CPU."""
    if device.type != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats(device)
    pipeline(batch_size, num_inference_steps=2, output_type="np")
    return torch.cuda.max_memory_allocated(device)


def largest_batch(pipeline, device: torch.device, start: int) -> int | None:
    """The largest power-of-two multiple of `start` that runs a 2-step call without running out of GPU memory."""
    if device.type != "cuda":
        return None
    batch, fits = start, None
    while batch <= 1 << 16:
        try:
            pipeline(batch, num_inference_steps=2, output_type="np")
        except torch.OutOfMemoryError:
            break
        fits, batch = batch, batch * 2
        torch.cuda.empty_cache()
    torch.cuda.empty_cache()
    return fits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="ddpm-tiny", choices=sorted(ddpm_hf.PRESETS))
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20, help="reverse steps per call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"), help="the UNet's dtype (both pipelines)")
    parser.add_argument("--max-batch", action="store_true", help="also find the largest batch that fits (GPU)")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/sample_throughput.json"))
    arguments = parser.parse_args()

    device = torch.device(arguments.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[arguments.dtype]
    torch.manual_seed(0)
    unet = ddpm_hf.create_unet(arguments.preset).to(device, dtype).eval()
    scheduler = ddpm_hf.DDPMScheduler()
    pipelines = {
        "ddpm_hf": ddpm_hf.DDPMPipeline(unet=unet, scheduler=scheduler),
        "diffusers": diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler.from_config(scheduler.config)),
    }
    results = {}
    for name, pipeline in pipelines.items():
        pipeline.set_progress_bar_config(disable=True)
        seconds = time_call(pipeline, arguments.batch_size, arguments.steps, device, arguments.repeats)
        results[name] = {
            "seconds": seconds,
            "image_steps_per_second": arguments.batch_size * arguments.steps / seconds,
            "peak_memory_bytes": peak_memory(pipeline, arguments.batch_size, arguments.steps, device),
            "largest_batch": largest_batch(pipeline, device, arguments.batch_size) if arguments.max_batch else None,
        }
    ratio = results["ddpm_hf"]["image_steps_per_second"] / results["diffusers"]["image_steps_per_second"]
    record = {
        "benchmark": "sample_throughput",
        "date": time.strftime("%Y-%m-%d"),
        "machine": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "threads": torch.get_num_threads(),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        **{k: v for k, v in vars(arguments).items() if k != "output"},
        "results": results,
        "ratio_ddpm_hf_over_diffusers": ratio,
    }
    print(f"{arguments.preset}, batch {arguments.batch_size}, {arguments.steps} steps, {arguments.dtype}, {device}")
    print(f"{'pipeline':<10}  {'image-steps/s':>14}  {'seconds':>8}  {'peak MiB':>9}")
    for name, result in results.items():
        memory = result["peak_memory_bytes"]
        memory = f"{memory / 2**20:9.0f}" if memory is not None else f"{'-':>9}"
        print(f"{name:<10}  {result['image_steps_per_second']:14.1f}  {result['seconds']:8.3f}  {memory}")
    print(f"ratio ddpm_hf / diffusers: {ratio:.3f}")
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {arguments.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
