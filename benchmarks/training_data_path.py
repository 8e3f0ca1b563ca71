"""Training throughput with the images mapped from the prepared file (`ddpm_hf.image_cache`, the path since issue 14)
against the same images decoded into memory (the path before), in one run: one `ddpm-hf train` run's trainer takes
its optimizer steps (Algorithm 1: gather, flip, noise, forward, loss, backward, clip, Adam, EMA) with `images` bound
to the mapped file or to an in-memory copy of it, alternating, `--repeats` times each; min and median images/s.

On a CUDA GPU a third path is timed: the images in GPU memory, which is what the trainer does for data sets under
2**31 bytes (CIFAR-10: 150 MiB); mapped and in-memory there are the host paths that larger data sets take.

    python benchmarks/training_data_path.py --dataset ../shared/data/cifar10                        # CPU
    python benchmarks/training_data_path.py --dataset ../shared/data/cifar10 --preset ddpm-cifar10 --batch-size 128
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from accelerate import Accelerator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import record_header, synchronize, write_record  # noqa: E402

import ddpm_hf  # noqa: E402
from ddpm_hf.acceleration import Speedups  # noqa: E402
from ddpm_hf.train import _Trainer, draw_global_batch  # noqa: E402
from ddpm_hf.training_config import TrainingConfig  # noqa: E402


def images_per_second(run: _Trainer, images: torch.Tensor, first_step: int, steps: int) -> float:
    """Images/s of `steps` optimizer steps of `run` gathering from `images`, from step `first_step` on."""
    run.images, device = images, run.accelerator.device
    synchronize(device)
    started = time.perf_counter()
    for step in range(first_step, first_step + steps):
        run.optimizer_step(step, draw_global_batch(run.config, run.num_images, run.image_shape, step, device))
    synchronize(device)
    return steps * run.config.train_batch_size / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="an image folder, a datasets folder or a Hub name")
    parser.add_argument("--preset", default="ddpm-tiny", choices=sorted(ddpm_hf.PRESETS))
    parser.add_argument("--resolution", type=int, default=32, help="default: CIFAR-10's 32 px")
    parser.add_argument("--batch-size", type=int, default=128, help="the global batch (default: the paper's 128)")
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per path, alternating")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/training_data_path.json"))
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        config = TrainingConfig(
            dataset=arguments.dataset, unet=arguments.preset, resolution=arguments.resolution,
            train_batch_size=arguments.batch_size, lr_warmup_steps=0, report_to="none", output_dir=work,
            cache_dir=str(Path(work) / "cache"),
        )  # fmt: skip
        accelerator = Accelerator(mixed_precision="bf16" if torch.cuda.is_available() else "no")
        fast = Speedups(tf32=None, channels_last=None, compile=None).resolve(accelerator.device)
        run = _Trainer(config, accelerator, fast, resume_from=None)
        paths = {"mapped file": run.data.images, "in memory": run.data.images.clone()}
        if accelerator.device.type == "cuda":
            paths["GPU memory"] = run.data.images.to(accelerator.device)
        step = 0
        for images in paths.values():  # warm-up: compile, the allocator, the page cache
            images_per_second(run, images, step, 2)
            step += 2
        rates: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(arguments.repeats):
            for name, images in paths.items():
                rates[name].append(images_per_second(run, images, step, arguments.steps))
                step += arguments.steps
        num_images = run.num_images

    record = {
        **record_header("training_data_path", accelerator.device),
        "dataset": arguments.dataset, "images": num_images, "preset": arguments.preset,
        "resolution": arguments.resolution, "batch_size": arguments.batch_size, "steps": arguments.steps,
        "speedups": {"tf32": fast.tf32, "channels_last": fast.channels_last, "compile": fast.compile},
        "images_per_second": rates,
    }  # fmt: skip
    print(f"{arguments.preset} at {arguments.resolution} px, batch {arguments.batch_size}, {num_images} images, "
          f"{arguments.repeats} × {arguments.steps} steps per path")  # fmt: skip
    print(f"{'path':<12} {'min img/s':>10} {'median img/s':>13} {'max img/s':>10}")
    for name, values in rates.items():
        print(f"{name:<12} {min(values):>10.1f} {statistics.median(values):>13.1f} {max(values):>10.1f}")
    write_record(record, arguments.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
