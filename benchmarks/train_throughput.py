"""Training throughput: images per second and model FLOP utilisation (MFU) of this package's trainer and of
diffusers' reference loop (the loop of its `examples/unconditional_image_generation/train_unconditional.py`, rebuilt
here on the same model, data and batch), measured in one run.

    python benchmarks/train_throughput.py                                   # CPU: ddpm-tiny at batch 8
    python benchmarks/train_throughput.py --preset ddpm-cifar10 --batch-size 128 --dataset ../shared/data/cifar10 \\
        --peak-tflops 790                                                   # GPU: the paper's CIFAR-10 model
    accelerate launch --multi_gpu --num_processes 8 benchmarks/train_throughput.py ...   # several GPUs

ddpm_hf's trainer runs with its defaults (`--mixed-precision auto`: bf16 on a CUDA GPU; TF32, channels-last and
torch.compile on for CUDA), each switchable here (`--tf32 --channels-last --compile`, auto|on|off); the reference
loop runs as the example does by default, in float32 (`--reference-mixed-precision`).
Both loops run `--steps` untimed warm-up steps, then `--steps` timed ones. ddpm_hf's images per second are read from
its own log (`metrics.jsonl`, the second logging window); the reference loop is timed around its steps. FLOPs per
training image are 3 × the forward FLOPs of one image (backward ≈ 2 × forward), counted by
`torch.utils.flop_counter`; MFU = images/s × FLOPs per image / (`--peak-tflops` × processes). Prints a table and
writes JSON (`--output`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import diffusers
import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from common import record_header, synchronize, write_record
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from torch.utils.flop_counter import FlopCounterMode

import ddpm_hf
from ddpm_hf.acceleration import Speedups, add_speedup_arguments, speedups_from_arguments
from ddpm_hf.data import find_image_column, load_image_dataset
from ddpm_hf.train import train
from ddpm_hf.training_config import TrainingConfig


def forward_flops_per_image(preset: str) -> int:
    """FLOPs of one forward pass of the preset's UNet on one image (a multiply-add counts 2)."""
    unet = ddpm_hf.create_unet(preset)
    size, channels = unet.config.sample_size, unet.config.in_channels
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        unet(torch.zeros(1, channels, size, size), torch.tensor([10]))
    return counter.get_total_flops()


def ddpm_hf_images_per_second(arguments: argparse.Namespace, speedups: Speedups) -> float:
    """Run ddpm_hf's trainer for 2 × steps and read the second logging window's images per second."""
    config = TrainingConfig(
        dataset=arguments.dataset,
        unet=arguments.preset,
        train_batch_size=arguments.batch_size,
        max_train_steps=2 * arguments.steps,
        logging_steps=arguments.steps,
        checkpointing_steps=10 * arguments.steps,
        sample_steps=10 * arguments.steps,
        num_sample_images=arguments.sample_grid_images,
        sample_inference_steps=1,
        mixed_precision=arguments.mixed_precision,
        tf32=speedups.tf32,
        channels_last=speedups.channels_last,
        torch_compile=speedups.compile,
        report_to="none",
        output_dir=str(arguments.work_dir),
        lr_warmup_steps=0,
    )
    train(config)
    rows = [json.loads(line) for line in (arguments.work_dir / "metrics.jsonl").read_text().splitlines()]
    return rows[-1]["images_per_second"]


def _diffusers_transform(resolution: int, column: str):
    """diffusers' example transform, Resize → CenterCrop → RandomHorizontalFlip → ToTensor → Normalize([0.5], [0.5]),
    with PIL and numpy (torchvision is not a dependency here)."""
    import PIL.Image

    def transform(examples: dict) -> dict:
        tensors = []
        for image in examples[column]:
            image = image.convert("RGB")
            scale = resolution / min(image.size)
            image = image.resize(
                (round(image.width * scale), round(image.height * scale)), PIL.Image.Resampling.BILINEAR
            )
            left, top = (image.width - resolution) // 2, (image.height - resolution) // 2
            image = image.crop((left, top, left + resolution, top + resolution))
            if np.random.rand() < 0.5:
                image = image.transpose(PIL.Image.Transpose.FLIP_LEFT_RIGHT)
            array = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
            tensors.append((array - 0.5) / 0.5)
        return {"input": tensors}

    return transform


def diffusers_images_per_second(arguments: argparse.Namespace) -> float:
    """diffusers' train_unconditional.py loop (its defaults: AdamW with weight decay 1e-6, cosine schedule with 500
    warm-up steps, EMA with warm-up, a DataLoader over `datasets` with per-image transforms, `loss.item()` every
    step), on the same UNet preset, data and batch."""
    # Accelerate keeps one process-wide state: let the reference loop choose its own mixed precision after ddpm_hf's
    # run (the processes and their process group, kept in PartialState, stay as they are).
    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(mixed_precision=arguments.reference_mixed_precision)
    torch.manual_seed(0)
    model = ddpm_hf.create_unet(arguments.preset)
    resolution = model.config.sample_size
    noise_scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
    dataset = load_image_dataset(arguments.dataset, "train", image_size=resolution)
    dataset.set_transform(_diffusers_transform(resolution, find_image_column(dataset.features)))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=arguments.batch_size // accelerator.num_processes, shuffle=True,
        num_workers=arguments.dataloader_num_workers, drop_last=True,
    )  # fmt: skip
    lr_scheduler = get_scheduler("cosine", optimizer=optimizer, num_warmup_steps=500, num_training_steps=10**6)
    model, optimizer, loader, lr_scheduler = accelerator.prepare(model, optimizer, loader, lr_scheduler)
    ema_model = EMAModel(
        model.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4,
        model_cls=diffusers.UNet2DModel, model_config=accelerator.unwrap_model(model).config,
    )  # fmt: skip
    ema_model.to(accelerator.device)
    weight_dtype = torch.float32
    step, started = 0, None
    while step < 2 * arguments.steps:
        for batch in loader:
            if step == arguments.steps:  # warm-up done
                synchronize(accelerator.device)
                started = time.perf_counter()
            clean_images = batch["input"].to(weight_dtype)
            noise = torch.randn(clean_images.shape, dtype=weight_dtype, device=clean_images.device)
            timesteps = torch.randint(
                0, noise_scheduler.config.num_train_timesteps, (clean_images.shape[0],), device=clean_images.device
            ).long()
            noisy_images = noise_scheduler.add_noise(clean_images, noise, timesteps)
            with accelerator.accumulate(model):
                model_output = model(noisy_images, timesteps).sample
                loss = F.mse_loss(model_output.float(), noise.float())
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            if accelerator.sync_gradients:
                ema_model.step(model.parameters())
            loss.detach().item()  # the example logs the loss every step
            step += 1
            if step == 2 * arguments.steps:
                break
    synchronize(accelerator.device)
    return arguments.steps * arguments.batch_size / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="ddpm-tiny", choices=sorted(ddpm_hf.PRESETS))
    parser.add_argument("--batch-size", type=int, default=8, help="the global batch")
    parser.add_argument("--steps", type=int, default=20, help="warm-up steps, then as many timed steps")
    parser.add_argument("--dataset", default=None, help="default: the built-in shapes (no network)")
    parser.add_argument("--mixed-precision", default="auto", choices=("auto", "no", "fp16", "bf16"), help="ddpm_hf's")
    parser.add_argument("--reference-mixed-precision", default="no", choices=("no", "fp16", "bf16"))
    parser.add_argument("--dataloader-num-workers", type=int, default=0, help="the reference loop's (its default 0)")
    parser.add_argument(
        "--sample-grid-images",
        type=int,
        default=1,
        help="images of the untimed sample grid at the end of ddpm_hf's run (1 step each; with torch.compile, the "
        "batch that later sampling uses lets it reuse the compiled kernels)",
    )
    parser.add_argument("--peak-tflops", type=float, default=None, help="the hardware limit, for MFU (per process)")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/train_throughput.json"))
    parser.add_argument("--work-dir", type=Path, default=Path("benchmarks/results/train_run"), help="ddpm_hf's run")
    add_speedup_arguments(parser)
    arguments = parser.parse_args()
    speedups = speedups_from_arguments(arguments)

    flops_per_image = 3 * forward_flops_per_image(arguments.preset)
    ours = ddpm_hf_images_per_second(arguments, speedups)
    reference = diffusers_images_per_second(arguments)
    accelerator = Accelerator()
    if not accelerator.is_main_process:
        return 0
    processes = accelerator.num_processes

    def mfu(images_per_second: float) -> float | None:
        if arguments.peak_tflops is None:
            return None
        return images_per_second * flops_per_image / (arguments.peak_tflops * 1e12 * processes)

    results = {
        "ddpm_hf": {"images_per_second": ours, "mfu": mfu(ours)},
        "diffusers_reference_loop": {"images_per_second": reference, "mfu": mfu(reference)},
    }
    device = accelerator.device
    summary = json.loads((arguments.work_dir / "training_summary.json").read_text())
    record = {
        **record_header("train_throughput", device),
        "processes": processes,
        "training_flops_per_image": flops_per_image,
        **{k: v for k, v in vars(arguments).items() if k not in ("output", "work_dir")},
        "ddpm_hf_mixed_precision": summary["mixed_precision"],
        "ddpm_hf_speedups": summary["speedups"],
        "results": results,
        "ratio_ddpm_hf_over_diffusers": ours / reference,
    }
    on = [name for name, value in summary["speedups"].items() if value]
    print(f"{arguments.preset}, global batch {arguments.batch_size}, {device}, {processes} process(es); "
          f"{flops_per_image / 1e9:.2f} GFLOP per training image")  # fmt: skip
    print(f"ddpm_hf: {summary['mixed_precision']} mixed precision, speed-ups: {', '.join(on) or 'none'}; "
          f"reference loop: {arguments.reference_mixed_precision} mixed precision")  # fmt: skip
    print(f"{'loop':<26}  {'images/s':>10}  {'MFU':>7}")
    for name, result in results.items():
        utilisation = f"{100 * result['mfu']:6.1f}%" if result["mfu"] is not None else f"{'-':>7}"
        print(f"{name:<26}  {result['images_per_second']:10.1f}  {utilisation}")
    print(f"ratio ddpm_hf / diffusers: {ours / reference:.3f}")
    write_record(record, arguments.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
