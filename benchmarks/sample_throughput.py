"""Sampling throughput: image-steps per second of ancestral sampling (or of `--scheduler NAME`), ddpm_hf.DDPMPipeline
against diffusers.DDPMPipeline with the same UNet and the same scheduler configuration, measured in one run.

    python benchmarks/sample_throughput.py                                     # CPU: ddpm-tiny, small batch
    python benchmarks/sample_throughput.py --preset ddpm-cifar10 --batch-size 512 --steps 100 --max-batch   # GPU

Three pipelines share one network: diffusers' `DDPMPipeline` (its defaults: the UNet's dtype, eager), ddpm_hf's plain
pipeline (bit-identical to diffusers), and ddpm_hf with its speed-ups (`DDPMPipeline.enable_speedups`: bf16
autocast, TF32, channels-last, torch.compile, CUDA graphs; `--bf16 --tf32 --channels-last --compile --cuda-graphs`,
each auto|on|off, auto = on for CUDA). An image-step is one network evaluation of one image: a batch of B images over
S reverse steps is B·S image-steps; FID-50k at 1000 steps is 5·10⁷ of them. Each pipeline draws once untimed
(warm-up: allocations, compilation, graph capture), then `--repeats` times timed; the best time counts. On a GPU the
peak memory of one call is reported too, and with `--max-batch` the largest batch that fits (doubling until out of
memory); `--largest-batch-steps N` then times every pipeline again at the largest batch that all of them fit.

The speed-ups' deviation from the plain float32 computation is measured on the same images (per-image generators,
so the same noise): the largest and mean absolute difference of the uint8 images, over `--deviation-steps` reverse
steps (default: all of T). Give a trained pipeline (`--pipeline`) to measure it where it matters; a random network
is the default. Prints a table and writes JSON (`--output`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import diffusers
import numpy as np
import torch
from common import record_header, synchronize, write_record

import ddpm_hf
from ddpm_hf.acceleration import add_speedup_arguments, speedups_from_arguments
from ddpm_hf.samplers import SCHEDULER_NAMES, network_evaluations, scheduler_from_name, scheduler_name, step_arguments


def time_call(pipeline, batch_size: int, steps: int, device: torch.device, repeats: int) -> float:
    """The best wall time of `repeats` calls, after one untimed warm-up call of the same shape."""
    generator = torch.Generator(device).manual_seed(0)
    pipeline(batch_size, generator=generator, num_inference_steps=steps, output_type="np")
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
    pipeline(batch_size, num_inference_steps=steps, output_type="np")
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


def time_at_largest_batch(pipeline_for, names: list[str], batch_size: int, steps: int, device: torch.device) -> dict:
    """Every pipeline (`pipeline_for(name)`) timed at one batch, one timed call of `steps` steps after a warm-up call:
    the largest batch all of them fit, halved until all of them run it."""
    while batch_size >= 1:
        try:
            results = {}
            for name in names:
                torch.cuda.empty_cache()
                seconds = time_call(pipeline_for(name), batch_size, steps, device, 1)
                results[name] = {"seconds": seconds, "image_steps_per_second": batch_size * steps / seconds}
        except torch.OutOfMemoryError:
            batch_size //= 2
            continue
        baseline = next(iter(results.values()))["image_steps_per_second"]
        ratios = {name: result["image_steps_per_second"] / baseline for name, result in results.items()}
        return {"batch_size": batch_size, "steps": steps, "results": results, "ratios": ratios}
    return {}


def uint8_images(pipeline, batch_size: int, steps: int, device: torch.device) -> np.ndarray:
    """`batch_size` images, image i from its own generator seeded i, as uint8 (what FID sees)."""
    generators = [torch.Generator(device).manual_seed(i) for i in range(batch_size)]
    images = pipeline(batch_size, generator=generators, num_inference_steps=steps, output_type="np").images
    return (images * 255).round().astype(np.uint8)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="ddpm-tiny", choices=sorted(ddpm_hf.PRESETS))
    parser.add_argument("--pipeline", default=None, help="a trained pipeline folder instead of a random preset")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20, help="reverse steps per timed call")
    parser.add_argument(
        "--scheduler",
        type=scheduler_name,
        default="ddpm",
        help=f"the sampler, by ddpm_hf.samplers name ({', '.join(SCHEDULER_NAMES)}) or diffusers class (default: ddpm)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"), help="the UNet's weights (all pipelines)")
    parser.add_argument("--max-batch", action="store_true", help="also find the largest batch that fits (GPU)")
    parser.add_argument(
        "--largest-batch-steps",
        type=int,
        default=None,
        help="with --max-batch on a GPU: also time every pipeline at the largest batch all of them fit, over this "
        "many steps",
    )
    parser.add_argument("--deviation-steps", type=int, default=None, help="steps of the deviation run (default: T)")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/sample_throughput.json"))
    add_speedup_arguments(parser)
    arguments = parser.parse_args()
    speedups = speedups_from_arguments(arguments)

    device = torch.device(arguments.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[arguments.dtype]
    if arguments.pipeline is not None:
        loaded = ddpm_hf.DDPMPipeline.from_pretrained(arguments.pipeline)
        unet, scheduler = loaded.unet, loaded.scheduler
    else:
        torch.manual_seed(0)
        unet, scheduler = ddpm_hf.create_unet(arguments.preset), ddpm_hf.DDPMScheduler()
    scheduler = scheduler_from_name(arguments.scheduler, scheduler.config)
    # diffusers.DDPMPipeline gets the same diffusers class (it skips scale_model_input: timing only, for Euler & co.);
    # it passes a generator to every step, so it cannot run the schedulers whose step takes none (Heun, UniPC, PNDM).
    theirs = diffusers.DDPMScheduler if type(scheduler) is ddpm_hf.DDPMScheduler else type(scheduler)
    with_diffusers = "generator" in step_arguments(scheduler, None, None)
    nfe = network_evaluations(scheduler, arguments.steps)
    unet = unet.to(device).eval()
    if dtype != torch.float32:
        unet = unet.to(dtype=dtype)
    fast = ddpm_hf.DDPMPipeline(unet=unet, scheduler=scheduler).enable_speedups(speedups)
    pipelines = {
        "diffusers": diffusers.DDPMPipeline(unet=unet, scheduler=theirs.from_config(scheduler.config)),
        "ddpm_hf": ddpm_hf.DDPMPipeline(unet=unet, scheduler=scheduler),
        "ddpm_hf+speedups": fast,
    }
    if not with_diffusers:
        del pipelines["diffusers"]
    results = {}
    for name, pipeline in pipelines.items():
        pipeline.set_progress_bar_config(disable=True)
        seconds = time_call(pipeline, arguments.batch_size, arguments.steps, device, arguments.repeats)
        results[name] = {
            "seconds": seconds,
            "image_steps_per_second": arguments.batch_size * arguments.steps / seconds,
            "network_evaluations_per_second": arguments.batch_size * nfe / seconds,  # Heun: 2 per step
            "peak_memory_bytes": peak_memory(pipeline, arguments.batch_size, arguments.steps, device),
            "largest_batch": None,
        }

    def large(name: str):
        """The pipeline to run out of memory with: for the speed-ups a fresh one, so that the search keeps no graph or
        compiled module of the batches above (the plain pipelines run on contiguous weights, as above: channels-last
        converts them in place)."""
        if name != "ddpm_hf+speedups":
            unet.to(memory_format=torch.contiguous_format)
            return pipelines[name]
        fresh = ddpm_hf.DDPMPipeline(unet=unet, scheduler=scheduler).enable_speedups(speedups)
        fresh.set_progress_bar_config(disable=True)
        return fresh

    baseline_name = "diffusers" if with_diffusers else "ddpm_hf"
    baseline = results[baseline_name]["image_steps_per_second"]
    ratios = {name: result["image_steps_per_second"] / baseline for name, result in results.items()}

    deviation_steps = arguments.deviation_steps or scheduler.config.num_train_timesteps
    unet.to(memory_format=torch.contiguous_format)  # the plain float32 computation, as diffusers runs it
    plain_images = uint8_images(pipelines["ddpm_hf"], arguments.batch_size, deviation_steps, device)
    fast_images = uint8_images(fast, arguments.batch_size, deviation_steps, device)
    difference = np.abs(fast_images.astype(np.int16) - plain_images)
    deviation = {
        "steps": deviation_steps,
        "images": arguments.batch_size,
        "max_abs_uint8": int(difference.max()),
        "mean_abs_uint8": float(difference.mean()),
        "fraction_of_pixels_changed": float((difference > 0).mean()),
    }
    active = fast.active_speedups().describe()
    record = {
        **record_header("sample_throughput", device),
        **{k: v for k, v in vars(arguments).items() if k != "output"},
        "speedups": active,
        "scheduler_class": type(scheduler).__name__,
        "nfe": nfe,
        "results": results,
        "ratios_over_diffusers" if with_diffusers else "ratios_over_ddpm_hf": ratios,
        "speedup_deviation_from_float32": deviation,
        "largest_batch_results": None,
    }
    largest = None
    if arguments.max_batch:  # last, as it may take long: what is measured so far is written first
        write_record(record, arguments.output)
        for name in pipelines:
            results[name]["largest_batch"] = largest_batch(large(name), device, arguments.batch_size)
        fits = [result["largest_batch"] for result in results.values() if result["largest_batch"]]
        if arguments.largest_batch_steps and fits:
            largest = time_at_largest_batch(large, list(pipelines), min(fits), arguments.largest_batch_steps, device)
            record["largest_batch_results"] = largest
    source = arguments.pipeline or f"{arguments.preset} (random weights)"
    print(
        f"{source}, {type(scheduler).__name__}, batch {arguments.batch_size}, {arguments.steps} steps (NFE {nfe}), "
        f"{arguments.dtype} weights, {device}"
    )
    print(f"speed-ups: {', '.join(name for name, on in active.items() if on) or 'none'}")
    print(f"{'pipeline':<17}  {'image-steps/s':>14}  {'seconds':>8}  {'peak MiB':>9}  {'× ' + baseline_name:>11}")
    for name, result in results.items():
        memory = result["peak_memory_bytes"]
        memory = f"{memory / 2**20:9.0f}" if memory is not None else f"{'-':>9}"
        print(
            f"{name:<17}  {result['image_steps_per_second']:14.1f}  {result['seconds']:8.3f}  {memory}  "
            f"{ratios[name]:11.3f}"
        )
    if largest:
        rates = ", ".join(f"{name} {r['image_steps_per_second']:.1f}" for name, r in largest["results"].items())
        print(f"at the largest batch all fit, {largest['batch_size']} ({largest['steps']} steps): {rates} "
              f"image-steps/s; × {baseline_name}: {largest['ratios'].get('ddpm_hf+speedups', 0):.3f}")  # fmt: skip
    print(
        f"speed-ups vs plain float32 over {deviation_steps} steps: max |Δ| {deviation['max_abs_uint8']} / 255, "
        f"mean |Δ| {deviation['mean_abs_uint8']:.3f} / 255, {100 * deviation['fraction_of_pixels_changed']:.1f}% "
        "of pixels changed"
    )
    write_record(record, arguments.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
