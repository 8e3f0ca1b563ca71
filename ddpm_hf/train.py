"""Training a DDPM with Hugging Face Accelerate: Algorithm 1 of Ho et al. 2020, top to bottom in one file.

    repeat
        x_0 ~ q(x_0)
        t ~ Uniform({1, …, T})
        ε ~ N(0, I)
        take a gradient step on ∇_θ ‖ε − ε_θ(√ᾱ_t x_0 + √(1 − ᾱ_t) ε, t)‖²
    until converged

One process: `ddpm-hf train [options]`. Several (GPUs, machines): `accelerate launch -m ddpm_hf.train [options]`.

Batch semantics hold for any number of processes P and gradient-accumulation steps A: `train_batch_size` B is the
global batch of one optimizer step, every process handles B / (P·A) images per micro-step, the step counter and the
learning-rate schedule count optimizer steps. The images, flips, timesteps and noise of a global batch are drawn from
random streams seeded by (seed, step), the same on every process, and each process takes its slice; dropout is seeded
by (seed, step, rank). A run is therefore a function of its configuration: with dropout off, 1 and 8 processes give
the same weights up to floating-point summation order, and a resumed run repeats the uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, broadcast_object_list
from diffusers import UNet2DModel
from tqdm.auto import tqdm

from .acceleration import Speedups, tf32_enabled, training_precision
from .checkpoint import (
    Checkpoint,
    TrainingState,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    replace_folder,
    save_checkpoint,
)
from .data import global_batch_indices, load_training_images, to_model_input
from .ema import ExponentialMovingAverage
from .evaluate import reference_statistics, sample_features
from .hub import HubError, check_can_push, push_to_hub
from .inception import load_inception
from .metrics import feature_statistics, frechet_distance
from .output_folder import OutputFolderError, OutputFolderLock, claim_output_folder
from .pipeline import DDPMPipeline
from .plots import save_image_grid, save_loss_curve
from .scheduler import DDPMScheduler
from .seeding import stream_seed
from .training_config import TrainingConfig, parse_training_config

T_ = TypeVar("T_")

__all__ = ["train", "run_training", "NonFiniteLossError", "main"]

# Fields that may differ between a run and the run it resumes: they do not change what is computed.
RESUMABLE_CHANGES = {
    "max_train_steps",
    "logging_steps",
    "checkpointing_steps",
    "checkpoints_total_limit",
    "resume",
    "sample_steps",
    "num_sample_images",
    "sample_inference_steps",
    "report_to",
    "output_dir",
    "overwrite_output_dir",
    "cache_dir",
    "fid_steps",
    "fid_num_samples",
    "fid_inference_steps",
    "fid_batch_size",
    "inception_weights",
    "push_to_hub",
    "hub_repo_id",
    "hub_private",
    "tf32",
    "channels_last",
    "torch_compile",
}


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped without saving anything from that point on."""


class PushAfterTrainingError(RuntimeError):
    """Training finished and its results are saved, but pushing them to the Hub failed."""


def build_unet(config: TrainingConfig) -> UNet2DModel:
    """The network of `config.unet` (a preset or a config.json), with the run's overrides."""
    return UNet2DModel(**config.unet_kwargs())


def build_scheduler(config: TrainingConfig) -> DDPMScheduler:
    """The forward process of the run, saved with the pipeline for sampling."""
    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_start=config.beta_start,
        beta_end=config.beta_end,
        beta_schedule=config.beta_schedule,
        prediction_type=config.prediction_type,
        variance_type=config.variance_type,
    )


def learning_rate_factor(config: TrainingConfig, step: int) -> float:
    """Linear warm-up over `lr_warmup_steps` (the paper: 5,000), then constant (the paper), linear or cosine decay."""
    if step < config.lr_warmup_steps:
        return (step + 1) / config.lr_warmup_steps
    if config.lr_schedule == "constant":
        return 1.0
    progress = (step - config.lr_warmup_steps) / max(1, config.max_train_steps - config.lr_warmup_steps)
    if config.lr_schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def _check_resumable(config: TrainingConfig, checkpoint: Checkpoint, path: Path) -> None:
    saved = checkpoint.state.config
    differing = sorted(
        name for name, value in config.to_dict().items() if name not in RESUMABLE_CHANGES and saved.get(name) != value
    )
    if differing:
        changes = ", ".join(f"{name}: {saved.get(name)!r} → {getattr(config, name)!r}" for name in differing)
        raise ValueError(f"Cannot resume from {path}: the run's configuration differs ({changes}).")
    if config.max_train_steps < checkpoint.step:
        raise ValueError(
            f"Cannot resume from {path}: it is at step {checkpoint.step}, beyond --max-train-steps "
            f"{config.max_train_steps}; pass --max-train-steps {checkpoint.step} or more."
        )


def _resume_from(config: TrainingConfig) -> Path | None:
    """The checkpoint folder that `config.resume` names, or None for a new run."""
    if config.resume == "latest":
        return latest_checkpoint(Path(config.output_dir) / "checkpoints")
    return None if config.resume is None else Path(config.resume)


def _on_main_process(accelerator: Accelerator, check: Callable[[], T_], refusals: tuple[type[Exception], ...]) -> T_:
    """Run `check` on the main process alone and raise what it refuses on every process: the others must stop too,
    not wait for the main one forever."""
    result, refusal = None, None
    if accelerator.is_main_process:
        try:
            result = check()
        except refusals as error:
            refusal = error
    if accelerator.num_processes > 1:
        message = broadcast_object_list([None if refusal is None else str(refusal)])[0]
        refusal = refusal or (ValueError(message) if message is not None else None)
    if refusal is not None:
        raise refusal
    return result


def _claim_output_folder(config: TrainingConfig, accelerator: Accelerator) -> OutputFolderLock | None:
    """Lock the output folder for this run (the main process) and refuse, on every process, a folder that holds
    another run or is in use (ddpm_hf.output_folder)."""
    output_dir, resume_from = Path(config.output_dir), _resume_from(config)
    resumes_here = resume_from is not None and resume_from.resolve().parent == (output_dir / "checkpoints").resolve()
    lock = _on_main_process(
        accelerator,
        lambda: claim_output_folder(output_dir, resumes_here, config.overwrite_output_dir),
        (OutputFolderError,),
    )
    if config.resume == "latest" and resume_from is None and accelerator.is_main_process:
        print(f"No checkpoint in {output_dir / 'checkpoints'}: starting a new run.", file=sys.stderr)
    return lock


def _json_line(row: dict[str, Any]) -> str:
    """One line of metrics.jsonl. JSON has no Infinity or NaN: a non-finite number (an fp16 step's gradient norm)
    is written as null."""
    finite = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}
    return json.dumps(finite, allow_nan=False) + "\n"


def _read_metrics(path: Path, up_to_step: int | None = None) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [row for row in rows if up_to_step is None or row["step"] <= up_to_step]


def _warn_if_grids_dominate(config: TrainingConfig, start_step: int) -> None:
    """Say so when the sample grids will take longer than the training itself (a short trial run of a big model)."""
    grid_cost = config.num_sample_images * (config.sample_inference_steps or config.num_train_timesteps)
    grids = 1 + (config.max_train_steps - start_step) // config.sample_steps
    training_cost = 3 * config.train_batch_size * (config.max_train_steps - start_step)  # forward + backward ≈ 3
    if grids * grid_cost > training_cost:
        print(
            f"Note: the {grids} sample grid(s) of {config.num_sample_images} images × "
            f"{config.sample_inference_steps or config.num_train_timesteps} steps will take longer than the training "
            "itself; for a quick run, pass e.g. --num-sample-images 4 --sample-inference-steps 50.",
            file=sys.stderr,
        )


def train(config: TrainingConfig) -> dict[str, Any]:
    """Train a DDPM as `config` says; return the training summary (also written to `output_dir`).

    Writes, under `config.output_dir`: `pipeline/` (the EMA model as a `DDPMPipeline`, safetensors),
    `training_summary.json`, `samples.png` and `samples/step-*.png`, `loss_curve.png`, `metrics.jsonl`,
    `checkpoints/checkpoint-*`, and the tracker's logs in `logs/`; with `fid_steps`, also `best_pipeline/` (the EMA
    model of the step with the lowest FID so far) and `best_fid.json`.
    """
    torch.set_flush_denormal(True)  # denormal floats (tiny Adam moments) slow CPU arithmetic down many times over
    output_dir = Path(config.output_dir)
    accelerator = Accelerator(
        mixed_precision=training_precision(config.mixed_precision),
        log_with=None if config.report_to == "none" else config.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )
    # TF32, channels-last and torch.compile: on for CUDA unless the configuration says otherwise (ddpm_hf.acceleration)
    speedups = Speedups(tf32=config.tf32, channels_last=config.channels_last, compile=config.torch_compile)
    fast = speedups.resolve(accelerator.device)  # each True or False on this device
    lock = _claim_output_folder(config, accelerator)  # before anything is written; held to the end
    try:
        with tf32_enabled(True) if fast.tf32 else contextlib.nullcontext():
            return _train(config, accelerator, fast)
    finally:
        if lock is not None:
            lock.release()


def _train(config: TrainingConfig, accelerator: Accelerator, fast: Speedups) -> dict[str, Any]:
    """`train`'s body, under the run's Accelerator and TF32 setting, with the speed-ups `fast` resolved."""
    started = time.time()
    output_dir = Path(config.output_dir)
    device, rank, num_processes = accelerator.device, accelerator.process_index, accelerator.num_processes
    is_main = accelerator.is_main_process
    if config.push_to_hub:  # a push that cannot happen fails now, not after training
        private = config.hub_private or None
        _on_main_process(
            accelerator, lambda: check_can_push(config.hub_repo_id, private=private), (ValueError, HubError)
        )

    # ---- Batch arithmetic: B global = A micro-steps × P processes × b images --------------------------------------
    B, A = config.train_batch_size, config.gradient_accumulation_steps
    if B % (A * num_processes):
        raise ValueError(
            f"train_batch_size={B} must be divisible by gradient_accumulation_steps × processes = {A} × "
            f"{num_processes}."
        )
    micro_batch = B // (A * num_processes)

    # ---- The network, the forward process, the checkpoint to resume and the data (all checked before training) ----
    torch.manual_seed(stream_seed(config.seed, 0))  # the initial weights
    unet = build_unet(config)
    scheduler = build_scheduler(config)
    resolution, channels = unet.config.sample_size, unet.config.in_channels
    checkpoints_dir = output_dir / "checkpoints"
    resume_from = _resume_from(config)
    checkpoint = load_checkpoint(resume_from) if resume_from is not None else None
    if checkpoint is not None:
        _check_resumable(config, checkpoint, resume_from)
        try:
            unet.load_state_dict(checkpoint.model)
        except RuntimeError as error:
            reason = str(error).splitlines()[0]
            raise ValueError(f"Checkpoint {resume_from} does not fit the run's UNet: {reason}") from None
    start_step = 0 if checkpoint is None else checkpoint.step
    if is_main:
        _warn_if_grids_dominate(config, start_step)
    data = load_training_images(
        config.dataset, config.split, config.image_column, resolution, channels,
        center_crop=config.center_crop, cache_dir=config.cache_dir, show_progress=is_main,
    )  # fmt: skip
    images = data.images
    if device.type == "cuda" and images.numel() < 2**31:  # small datasets live on the GPU: the loader never starves it
        images = images.to(device)
    num_images = len(images)

    # ---- Optimizer (Adam, as the paper), schedule, EMA ------------------------------------------------------------
    unet.to(device, memory_format=torch.channels_last if fast.channels_last else torch.contiguous_format)
    ema = ExponentialMovingAverage(unet, config.ema_decay, config.ema_warmup)
    optimizer = torch.optim.AdamW(
        unet.parameters(),
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_epsilon,
        weight_decay=config.weight_decay,
        fused=device.type == "cuda",
    )
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_factor(config, step))
    model, optimizer = accelerator.prepare(unet, optimizer)  # the model: `unet` itself, or DDP around it
    forward = torch.compile(model) if fast.compile else model  # `unet` keeps the weights: EMA, checkpoints use it
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint.optimizer)
        lr_schedule.load_state_dict(checkpoint.state.lr_schedule)
        ema.load_state_dict(checkpoint.ema, checkpoint.state.ema_updates)
        if accelerator.scaler is not None and checkpoint.state.grad_scaler:
            accelerator.scaler.load_state_dict(checkpoint.state.grad_scaler)

    metrics_path = output_dir / "metrics.jsonl"
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        kept = _read_metrics(metrics_path, up_to_step=start_step)  # drop what an interrupted run logged after it
        metrics_path.write_text("".join(_json_line(row) for row in kept))
    if config.report_to != "none":
        accelerator.init_trackers("ddpm-hf", config={k: str(v) for k, v in config.to_dict().items()})

    # ---- FID during training: the extractor and the reference statistics (cached) before the first step -----------
    best_fid_path, best_fid = output_dir / "best_fid.json", {"fid": float("inf")}
    if config.fid_steps is not None:
        inception = load_inception(config.inception_weights, device=device)
        reference = reference_statistics(
            config.dataset, config.split, resolution, channels, inception, accelerator, config.image_column
        )
        if best_fid_path.is_file():
            best_fid = json.loads(best_fid_path.read_text())

    # The EMA network as a pipeline with the run's speed-ups, for grids, FIDs and the result: built once, so that its
    # compiled network and CUDA graph are kept between uses (both read the EMA weights, updated in place).
    ema_pipeline = DDPMPipeline(unet=ema.model, scheduler=build_scheduler(config)).enable_speedups(fast)

    def measure_fid(step: int) -> None:
        """FID of `fid_num_samples` EMA samples (spread over the processes); keep the EMA pipeline if it is the best."""
        steps = config.fid_inference_steps or T
        ema_pipeline.set_progress_bar_config(desc=f"FID samples at step {step}", leave=False, disable=not is_main)
        features = sample_features(
            ema_pipeline, inception, config.fid_num_samples, accelerator, seed=config.seed,
            batch_size=config.fid_batch_size, num_inference_steps=steps, respace=steps < T,
        )  # fmt: skip
        if not is_main:
            return
        fid = frechet_distance(*feature_statistics(features), reference.mu, reference.sigma)
        if config.report_to != "none":
            accelerator.log({"fid": fid}, step=step)
        with metrics_path.open("a") as handle:
            handle.write(_json_line({"step": step, "fid": fid, "fid_num_samples": config.fid_num_samples}))
        tqdm.write(f"step {step}: FID {fid:.3f} ({config.fid_num_samples} samples)", file=sys.stderr)
        if fid < best_fid["fid"]:
            best = output_dir / "best_pipeline"
            temporary = output_dir / ".best_pipeline.tmp"
            shutil.rmtree(temporary, ignore_errors=True)
            ema_pipeline.save_pretrained(temporary)
            replace_folder(temporary, best)
            best_fid.update(step=step, fid=fid, num_samples=config.fid_num_samples, num_inference_steps=steps)
            best_fid_path.write_text(json.dumps(best_fid, indent=2) + "\n")

    def sample_grid(step: int) -> None:
        """Draw `num_sample_images` from the EMA network and save a grid (main process only)."""
        generators = [torch.Generator(device).manual_seed(config.seed + i) for i in range(config.num_sample_images)]
        steps = config.sample_inference_steps or config.num_train_timesteps
        ema_pipeline.set_progress_bar_config(desc=f"Sample grid at step {step}", leave=False)
        samples = ema_pipeline(config.num_sample_images, generator=generators, num_inference_steps=steps).images
        grid = save_image_grid(samples, output_dir / "samples" / f"step-{step:07d}.png")
        grid.save(output_dir / "samples.png")
        if config.report_to in ("tensorboard", "all"):
            writer = accelerator.get_tracker("tensorboard", unwrap=True)
            writer.add_image("samples", np.asarray(grid), step, dataformats="HWC")

    # Non-finite losses are tracked on the device (no host synchronisation per step) and checked before anything
    # is logged or saved.
    first_bad_step = torch.tensor(-1, device=device)

    def check_finite() -> None:
        bad = accelerator.gather(first_bad_step.reshape(1))
        bad = bad[bad >= 0]
        if bad.numel():
            raise NonFiniteLossError(
                f"The loss became non-finite at step {int(bad.min()) + 1}; the run stopped and saved nothing after "
                f"it. Resume from the last checkpoint in {checkpoints_dir} with a lower --learning-rate, or without "
                "fp16 (--mixed-precision bf16 or no)."
            )

    def replica_spread() -> float:
        """The largest difference between processes of a fingerprint of the weights (0: in sync)."""
        parameters = list(unet.parameters())
        fingerprint = torch.stack(
            [
                sum(p.detach().double().sum() for p in parameters),
                sum(p.detach().double().square().sum() for p in parameters),
            ]
        )
        everyone = accelerator.gather(fingerprint.reshape(1, 2))
        return float((everyone - everyone[0]).abs().max())

    # ---- The training loop (Algorithm 1) --------------------------------------------------------------------------
    T = config.num_train_timesteps
    window_loss, window_steps, window_start = torch.zeros((), device=device), 0, time.time()
    loss_value = float("nan")
    progress = tqdm(total=config.max_train_steps, initial=start_step, desc="Training", disable=not is_main, unit="step")
    for step in range(start_step, config.max_train_steps):
        model.train()
        # One random stream per optimizer step, the same on every process: the global batch's rows, flips,
        # timesteps and noise do not depend on the number of processes.
        generator = torch.Generator(device).manual_seed(stream_seed(config.seed, 1, step))
        rows = global_batch_indices(num_images, B, config.seed, step)
        rows = rows.pin_memory().to(images.device, non_blocking=True) if images.is_cuda else rows
        flips = torch.rand(B, generator=generator, device=device) < 0.5 if config.random_flip else None
        timesteps = torch.randint(0, T, (B,), generator=generator, device=device)  # t ~ Uniform({1, …, T})
        noise = torch.randn((B, channels, resolution, resolution), generator=generator, device=device)  # ε ~ N(0, I)
        torch.manual_seed(stream_seed(config.seed, 2, step, rank))  # dropout

        step_loss = torch.zeros((), device=device)
        for micro_step in range(A):
            mine = slice(micro_step * (B // A) + rank * micro_batch, micro_step * (B // A) + (rank + 1) * micro_batch)
            x_0 = to_model_input(
                images[rows[mine]].to(device, non_blocking=True), None if flips is None else flips[mine]
            )
            t, eps = timesteps[mine], noise[mine]
            x_t = scheduler.add_noise(x_0, eps, t)  # x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε   (eq. 4)
            if fast.channels_last:
                x_t = x_t.contiguous(memory_format=torch.channels_last)
            sync = micro_step == A - 1  # gradients are averaged over processes once per optimizer step
            with contextlib.nullcontext() if sync else accelerator.no_sync(model):
                model_output = forward(x_t, t).sample  # ε_θ(x_t, t)
                loss = scheduler.training_loss(model_output.float(), x_0, eps, t, config.loss_type).mean()  # eq. 14
                accelerator.backward(loss / A)
            step_loss += loss.detach() / A
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm or float("inf"))
        learning_rate = lr_schedule.get_last_lr()[0]  # the rate of this step
        optimizer.step()
        lr_schedule.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(unet)

        first_bad_step = torch.where((first_bad_step < 0) & ~torch.isfinite(step_loss), step, first_bad_step)
        window_loss += step_loss
        window_steps += 1
        done = step + 1
        progress.update(1)

        if done % config.logging_steps == 0 or done == config.max_train_steps:
            check_finite()
            loss_value = float(accelerator.reduce(window_loss, "mean")) / window_steps
            elapsed = time.time() - window_start
            row = {
                "step": done,
                "loss": loss_value,
                "lr": learning_rate,
                "grad_norm": float(grad_norm),
                "images_per_second": window_steps * B / max(elapsed, 1e-9),
                "epoch": done * B / num_images,
                "replica_spread": replica_spread() if num_processes > 1 else 0.0,
            }
            if config.report_to != "none":
                accelerator.log({k: v for k, v in row.items() if k != "step"}, step=done)
            if is_main:
                with metrics_path.open("a") as handle:
                    handle.write(_json_line(row))
                progress.set_postfix(loss=f"{loss_value:.4f}", lr=f"{row['lr']:.2e}")
            window_loss.zero_()
            window_steps, window_start = 0, time.time()

        if done % config.checkpointing_steps == 0 or done == config.max_train_steps:
            check_finite()
            if is_main:
                state = TrainingState(
                    step=done,
                    config=config.to_dict(),
                    lr_schedule=lr_schedule.state_dict(),
                    ema_updates=ema.num_updates,
                    grad_scaler=accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
                    images_seen=done * B,
                )
                save_checkpoint(checkpoints_dir, unet.state_dict(), ema.state_dict(), optimizer.state_dict(), state)
                if config.checkpoints_total_limit is not None:
                    prune_checkpoints(checkpoints_dir, config.checkpoints_total_limit)
                tqdm.write(f"saved checkpoint at step {done}", file=sys.stderr)
            accelerator.wait_for_everyone()

        if is_main and (done % config.sample_steps == 0 or done == config.max_train_steps):
            sample_grid(done)
        if config.fid_steps is not None and (done % config.fid_steps == 0 or done == config.max_train_steps):
            measure_fid(done)
            accelerator.wait_for_everyone()
    progress.close()

    # ---- The result: the EMA pipeline, the summary, the loss curve ------------------------------------------------
    check_finite()
    summary: dict[str, Any] = {}
    if is_main:
        pipeline_dir = output_dir / "pipeline"
        ema_pipeline.save_pretrained(pipeline_dir)
        metrics = [row for row in _read_metrics(metrics_path) if "loss" in row]
        if metrics:
            save_loss_curve([m["step"] for m in metrics], [m["loss"] for m in metrics], output_dir / "loss_curve.png")
        summary = {
            "steps": config.max_train_steps,
            "resumed_from_step": start_step,
            "images_seen": config.max_train_steps * B,
            "epochs": config.max_train_steps * B / num_images,
            "wall_time_seconds": time.time() - started,
            "final_loss": metrics[-1]["loss"] if metrics else loss_value,
            "num_processes": num_processes,
            "mixed_precision": accelerator.mixed_precision,
            "speedups": fast.describe(),
            "parameters": sum(p.numel() for p in ema.model.parameters()),
            "dataset": {"source": data.source, "split": data.split, "column": data.column, "num_images": num_images},
            "pipeline": str(pipeline_dir),
            **({"best_fid": best_fid} if config.fid_steps is not None else {}),
            "config": config.to_dict(),
        }
        (output_dir / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"Saved the EMA pipeline to {pipeline_dir} and the summary to {output_dir / 'training_summary.json'}")
        if config.push_to_hub:
            _push_result(output_dir, config)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def _push_result(output_dir: Path, config: TrainingConfig) -> None:
    """Push the saved result; if that fails, say that nothing is lost and how to push it later."""
    try:
        commit = push_to_hub(output_dir, config.hub_repo_id, private=config.hub_private or None)
    except (HubError, ValueError, OSError) as error:  # whatever it is, the user must learn that nothing is lost
        raise PushAfterTrainingError(
            f"{error} Training is complete and saved in {output_dir}; push it when the Hub is reachable with: "
            f"ddpm-hf push {output_dir} --repo-id {config.hub_repo_id}"
        ) from None
    print(f"Pushed the pipeline to the Hub: {commit}")


def _one_line(error: BaseException) -> str:
    """An error as one line: an operating-system error names its file (a full disk: "No space left on device")."""
    if isinstance(error, OSError) and error.strerror and error.filename:
        return f"{error.strerror}: {error.filename}"
    return " ".join(str(error).split())


def run_training(argv: list[str] | None, prog: str) -> int:
    """Parse a command line, train, and turn the errors a user can fix into one clear line; return the exit status."""
    import argparse

    parser = argparse.ArgumentParser(
        prog=prog, description="Train a DDPM (Ho et al. 2020) with Hugging Face Accelerate."
    )
    try:
        train(parse_training_config(argv, parser=parser))
    except (ValueError, OSError, NonFiniteLossError, PushAfterTrainingError, HubError) as error:
        print(f"{prog}: error: {_one_line(error)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> None:
    """`accelerate launch -m ddpm_hf.train [options]`: the same options as `ddpm-hf train`."""
    sys.exit(run_training(argv, prog="python -m ddpm_hf.train"))


if __name__ == "__main__":
    main()
