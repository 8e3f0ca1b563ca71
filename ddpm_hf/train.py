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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, broadcast_object_list
from diffusers import UNet2DModel
from tqdm.auto import tqdm

from .acceleration import Speedups, describe_error, tf32_enabled, training_precision, warn_switched_off
from .checkpoint import (
    Checkpoint,
    TrainingState,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    replace_folder,
    save_checkpoint,
)
from .data import global_batch_indices, to_model_input
from .ema import ExponentialMovingAverage
from .hub import HubError, check_can_push, push_to_hub
from .image_cache import prepared_images
from .inception import load_inception
from .measures import reference_statistics, sample_features
from .metrics import feature_statistics, frechet_distance
from .output_folder import OutputFolderError, OutputFolderLock, claim_output_folder
from .pipeline import DDPMPipeline
from .plots import save_image_grid, save_loss_curve
from .samplers import sampler_record, scheduler_from_name
from .sampling import sample_seed
from .scheduler import DDPMScheduler
from .seeding import Stream, stream_seed
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
    "scheduler",
    "eta",
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


def _claim_output_folder(
    config: TrainingConfig, resume_from: Path | None, accelerator: Accelerator
) -> OutputFolderLock | None:
    """Lock the output folder for this run (the main process) and refuse, on every process, a folder that holds
    another run or is in use (ddpm_hf.output_folder)."""
    output_dir = Path(config.output_dir)
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
    steps = config.sample_inference_steps or config.num_train_timesteps
    grids = 1 + (config.max_train_steps - start_step) // config.sample_steps
    training_cost = 3 * config.train_batch_size * (config.max_train_steps - start_step)  # forward + backward ≈ 3
    if grids * config.num_sample_images * steps > training_cost:
        print(
            f"Note: the {grids} sample grid(s) of {config.num_sample_images} images × {steps} steps will take longer "
            "than the training itself; for a quick run, pass e.g. --num-sample-images 4 --sample-inference-steps 50.",
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
    resume_from = _resume_from(config)  # found once, for the folder check and the resume alike
    lock = _claim_output_folder(config, resume_from, accelerator)  # before anything is written; held to the end
    try:
        with tf32_enabled(fast.tf32):  # either way: PyTorch's default has TF32 on for cuDNN convolutions
            return _train(config, accelerator, fast, resume_from)
    finally:
        if lock is not None:
            lock.release()


@dataclass
class GlobalBatch:
    """One optimizer step's global batch of Algorithm 1: dataset rows, flips, t ~ Uniform and ε ~ N(0, I).

    Drawn from the stream (seed, step) alone, the same on every process, so that the batch does not depend on the
    number of processes: each process takes its slice (`part`)."""

    rows: torch.Tensor
    flips: torch.Tensor | None
    timesteps: torch.Tensor
    noise: torch.Tensor

    def part(self, where: slice) -> GlobalBatch:
        return GlobalBatch(
            self.rows[where], None if self.flips is None else self.flips[where], self.timesteps[where],
            self.noise[where],
        )  # fmt: skip


def draw_global_batch(config: TrainingConfig, num_images: int, shape: tuple[int, int, int], step: int,
                      device: torch.device) -> GlobalBatch:  # fmt: skip
    """The global batch of optimizer step `step` (0-based) of a run of `config` over `num_images` images of `shape`."""
    B, T = config.train_batch_size, config.num_train_timesteps
    generator = torch.Generator(device).manual_seed(stream_seed(config.seed, Stream.BATCH, step))
    rows = global_batch_indices(num_images, B, config.seed, step)
    flips = torch.rand(B, generator=generator, device=device) < 0.5 if config.random_flip else None
    timesteps = torch.randint(0, T, (B,), generator=generator, device=device)  # t ~ Uniform({1, …, T})
    noise = torch.randn((B, *shape), generator=generator, device=device)  # ε ~ N(0, I)
    return GlobalBatch(rows, flips, timesteps, noise)


def _due(done: int, every: int | None, last: int) -> bool:
    return every is not None and (done % every == 0 or done == last)


def _train(
    config: TrainingConfig, accelerator: Accelerator, fast: Speedups, resume_from: Path | None
) -> dict[str, Any]:
    """`train`'s body, under the run's Accelerator and TF32 setting, with the speed-ups `fast` resolved, continuing
    from the checkpoint folder `resume_from` if any."""
    run = _Trainer(config, accelerator, fast, resume_from)
    progress = tqdm(total=config.max_train_steps, initial=run.start_step, desc="Training",
                    disable=not accelerator.is_main_process, unit="step")  # fmt: skip
    for step in range(run.start_step, config.max_train_steps):
        batch = draw_global_batch(config, run.num_images, run.image_shape, step, accelerator.device)
        run.optimizer_step(step, batch)
        done = step + 1
        progress.update(1)
        if _due(done, config.logging_steps, config.max_train_steps):
            progress.set_postfix(run.log(done))
        if _due(done, config.checkpointing_steps, config.max_train_steps):
            run.save_checkpoint(done)
        if _due(done, config.sample_steps, config.max_train_steps) and accelerator.is_main_process:
            run.sample_grid(done)
        if _due(done, config.fid_steps, config.max_train_steps):
            run.measure_fid(done)
    progress.close()
    return run.finish()


class _Trainer:
    """A training run: what it builds before the first step, one optimizer step, and its periodic work."""

    def __init__(self, config: TrainingConfig, accelerator: Accelerator, fast: Speedups, resume_from: Path | None):
        self.config, self.accelerator, self.fast = config, accelerator, fast
        self.started = time.time()
        self.output_dir = Path(config.output_dir)
        self.checkpoints_dir = self.output_dir / "checkpoints"
        self.metrics_path = self.output_dir / "metrics.jsonl"
        self.is_main = accelerator.is_main_process
        if config.push_to_hub:  # a push that cannot happen fails now, not after training
            private = config.hub_private or None
            _on_main_process(
                accelerator, lambda: check_can_push(config.hub_repo_id, private=private), (ValueError, HubError)
            )
        # B global = A micro-steps × P processes × b images
        B, A, P = config.train_batch_size, config.gradient_accumulation_steps, accelerator.num_processes
        if B % (A * P):
            raise ValueError(
                f"train_batch_size={B} must be divisible by gradient_accumulation_steps × processes = {A} × {P}."
            )
        self.micro_batch = B // (A * P)
        checkpoint = self._build_network(resume_from)  # the network, the forward process and the checkpoint
        self._load_data()  # bad data fails here, before any training
        self._build_optimizer(checkpoint)
        self._start_logs()
        # Non-finite losses are tracked on the device (no host synchronisation per step) and checked before
        # anything is logged or saved.
        self.first_bad_step = torch.tensor(-1, device=accelerator.device)
        self.window_loss, self.window_steps, self.window_start = (
            torch.zeros((), device=accelerator.device),
            0,
            time.time(),
        )
        self.loss_value = self.grad_norm = self.learning_rate = float("nan")
        self._prepare_fid()
        # The EMA network as a pipeline with the run's speed-ups and sampler (`--scheduler`), for grids and FIDs:
        # built once, so that its compiled network and CUDA graph are kept between uses (both read the EMA weights,
        # updated in place). The saved pipelines hold the run's DDPM scheduler (`_result_pipeline`).
        sampler = scheduler_from_name(config.scheduler, self.scheduler.config, config.eta)
        self.ema_pipeline = DDPMPipeline(unet=self.ema.model, scheduler=sampler).enable_speedups(fast)
        self.compile_unchecked = fast.compile  # the first compiled step is checked (`_gradients`)

    # ---- Before the first step -------------------------------------------------------------------------------------

    def _build_network(self, resume_from: Path | None) -> Checkpoint | None:
        config = self.config
        torch.manual_seed(stream_seed(config.seed, Stream.INITIAL_WEIGHTS))
        self.unet = build_unet(config)
        self.scheduler = build_scheduler(config)
        self.image_shape = (self.unet.config.in_channels, self.unet.config.sample_size, self.unet.config.sample_size)
        checkpoint = load_checkpoint(resume_from) if resume_from is not None else None
        if checkpoint is not None:
            _check_resumable(config, checkpoint, resume_from)
            try:
                self.unet.load_state_dict(checkpoint.model)
            except RuntimeError as error:
                reason = str(error).splitlines()[0]
                raise ValueError(f"Checkpoint {resume_from} does not fit the run's UNet: {reason}") from None
        self.start_step = 0 if checkpoint is None else checkpoint.step
        if self.is_main:
            _warn_if_grids_dominate(config, self.start_step)
        return checkpoint

    def _load_data(self) -> None:
        """The training images, prepared once per machine and mapped from that file (ddpm_hf.image_cache): a batch
        reads its own rows only."""
        config, accelerator, (channels, resolution, _) = self.config, self.accelerator, self.image_shape
        self.data = prepared_images(
            config.dataset, config.split, config.image_column, resolution, channels,
            center_crop=config.center_crop, cache_dir=config.cache_dir,
            is_local_main=accelerator.is_local_main_process, wait=accelerator.wait_for_everyone,
        )  # fmt: skip
        self.images = self.data.images
        # The rule for the GPU: on a CUDA device, images of fewer than 2**31 bytes (CIFAR-10 is 150 MiB) are copied to
        # it, where a batch is gathered without a host-to-device copy; larger ones stay mapped on the host.
        if accelerator.device.type == "cuda" and self.images.numel() < 2**31:
            self.images = self.images.to(accelerator.device)
        self.num_images = len(self.images)

    def _build_optimizer(self, checkpoint: Checkpoint | None) -> None:
        """Adam, as the paper (AdamW with weight decay 0), its learning-rate schedule and the EMA of the weights."""
        config, device = self.config, self.accelerator.device
        self.unet.to(device, memory_format=torch.channels_last if self.fast.channels_last else torch.contiguous_format)
        self.ema = ExponentialMovingAverage(self.unet, config.ema_decay, config.ema_warmup)
        optimizer = torch.optim.AdamW(
            self.unet.parameters(),
            lr=config.learning_rate,
            betas=(config.adam_beta1, config.adam_beta2),
            eps=config.adam_epsilon,
            weight_decay=config.weight_decay,
            fused=device.type == "cuda",
        )
        self.lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: learning_rate_factor(config, s))
        self.model, self.optimizer = self.accelerator.prepare(self.unet, optimizer)  # `unet` itself, or DDP around it
        # `unet` keeps the weights: the EMA, checkpoints and the replica check read it, never the compiled wrapper
        self.forward = torch.compile(self.model) if self.fast.compile else self.model
        if checkpoint is not None:
            self.optimizer.load_state_dict(checkpoint.optimizer)
            self.lr_schedule.load_state_dict(checkpoint.state.lr_schedule)
            self.ema.load_state_dict(checkpoint.ema, checkpoint.state.ema_updates)
            if self.accelerator.scaler is not None and checkpoint.state.grad_scaler:
                self.accelerator.scaler.load_state_dict(checkpoint.state.grad_scaler)

    def _start_logs(self) -> None:
        config = self.config
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            kept = _read_metrics(self.metrics_path, up_to_step=self.start_step)  # drop what a killed run logged after
            self.metrics_path.write_text("".join(_json_line(row) for row in kept))
        if config.report_to != "none":
            self.accelerator.init_trackers("ddpm-hf", config={k: str(v) for k, v in config.to_dict().items()})

    def _prepare_fid(self) -> None:
        """FID during training: the extractor and the reference statistics (cached) before the first step."""
        config = self.config
        self.best_fid_path, self.best_fid = self.output_dir / "best_fid.json", {"fid": float("inf")}
        if config.fid_steps is None:
            return
        channels, resolution, _ = self.image_shape
        self.inception = load_inception(config.inception_weights, device=self.accelerator.device)
        self.reference = reference_statistics(
            config.dataset, config.split, resolution, channels, self.inception, self.accelerator, config.image_column
        )
        if self.best_fid_path.is_file():
            self.best_fid = json.loads(self.best_fid_path.read_text())

    # ---- One optimizer step: Algorithm 1, lines 2-5 -------------------------------------------------------------

    def optimizer_step(self, step: int, batch: GlobalBatch) -> None:
        config, accelerator = self.config, self.accelerator
        step_loss = self._gradients(step, batch)
        self.grad_norm = accelerator.clip_grad_norm_(self.model.parameters(), config.max_grad_norm or float("inf"))
        self.learning_rate = self.lr_schedule.get_last_lr()[0]  # the rate of this step
        self.optimizer.step()
        self.lr_schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.unet)
        self.first_bad_step = torch.where(
            (self.first_bad_step < 0) & ~torch.isfinite(step_loss), step, self.first_bad_step
        )
        self.window_loss += step_loss
        self.window_steps += 1

    def _gradients(self, step: int, batch: GlobalBatch) -> torch.Tensor:
        """The step's loss, its gradients accumulated. The first compiled step is checked: if `torch.compile` raises,
        or gives a non-finite loss where the plain network's is finite, the run warns, switches compile off and takes
        the step again without it (the batch, its noise and the dropout are functions of the step alone)."""
        if not self.compile_unchecked:
            return self._accumulate(step, batch)
        self.compile_unchecked = False
        try:
            loss = self._accumulate(step, batch)
            if bool(torch.isfinite(loss)):
                return loss
            reason = "a non-finite loss where the plain network's is finite"
        except torch.OutOfMemoryError:
            raise  # the batch does not fit, compiled or not
        except Exception as error:  # noqa: BLE001 - an optimization never ends the run
            reason = describe_error(error)
        self.optimizer.zero_grad(set_to_none=True)
        compiled, self.forward = self.forward, self.model
        loss = self._accumulate(step, batch)
        if reason.startswith("a non-finite") and not bool(torch.isfinite(loss)):
            self.forward = compiled  # the network itself diverges, compiled or not: the loss check reports it
        else:
            warn_switched_off("compile", reason, "training")
            self.fast = replace(self.fast, compile=False)
        return loss

    def _accumulate(self, step: int, batch: GlobalBatch) -> torch.Tensor:
        """Forward, loss and backward over this process's micro-batches of the global batch; the mean loss."""
        config, accelerator, device = self.config, self.accelerator, self.accelerator.device
        B, A, b, rank = (
            config.train_batch_size,
            config.gradient_accumulation_steps,
            self.micro_batch,
            accelerator.process_index,
        )
        self.model.train()
        torch.manual_seed(stream_seed(config.seed, Stream.DROPOUT, step, rank))
        step_loss = torch.zeros((), device=device)
        for micro_step in range(A):
            mine = batch.part(slice(micro_step * (B // A) + rank * b, micro_step * (B // A) + (rank + 1) * b))
            rows = mine.rows.pin_memory().to(device, non_blocking=True) if self.images.is_cuda else mine.rows
            # x_0 ~ q(x_0); index_select gathers rows from the mapped file 6-12× faster than `images[rows]` on the CPU
            x_0 = to_model_input(self.images.index_select(0, rows).to(device, non_blocking=True), mine.flips)
            x_t = self.scheduler.add_noise(x_0, mine.noise, mine.timesteps)  # √ᾱ_t x_0 + √(1 − ᾱ_t) ε   (eq. 4)
            if self.fast.channels_last:
                x_t = x_t.contiguous(memory_format=torch.channels_last)
            sync = micro_step == A - 1  # gradients are averaged over processes once per optimizer step
            with contextlib.nullcontext() if sync else accelerator.no_sync(self.model):
                model_output = self.forward(x_t, mine.timesteps).sample  # ε_θ(x_t, t)
                loss = self.scheduler.training_loss(
                    model_output.float(), x_0, mine.noise, mine.timesteps, config.loss_type
                ).mean()  # ‖ε − ε_θ‖² (eq. 14), or the bound's term
                accelerator.backward(loss / A)
            step_loss += loss.detach() / A
        return step_loss

    # ---- Periodic work -------------------------------------------------------------------------------------------

    def check_finite(self) -> None:
        bad = self.accelerator.gather(self.first_bad_step.reshape(1))
        bad = bad[bad >= 0]
        if bad.numel():
            raise NonFiniteLossError(
                f"The loss became non-finite at step {int(bad.min()) + 1}; the run stopped and saved nothing after "
                f"it. Resume from the last checkpoint in {self.checkpoints_dir} with a lower --learning-rate, or "
                "without fp16 (--mixed-precision bf16 or no)."
            )

    def replica_spread(self) -> float:
        """The largest difference between processes of a fingerprint of the weights (0: in sync)."""
        parameters = list(self.unet.parameters())
        fingerprint = torch.stack(
            [
                sum(p.detach().double().sum() for p in parameters),
                sum(p.detach().double().square().sum() for p in parameters),
            ]
        )
        everyone = self.accelerator.gather(fingerprint.reshape(1, 2))
        return float((everyone - everyone[0]).abs().max())

    def log(self, done: int) -> dict[str, str]:
        """Write the logging window's mean loss and the step's rates to the tracker and metrics.jsonl; return the
        progress bar's summary."""
        self.check_finite()
        accelerator, B = self.accelerator, self.config.train_batch_size
        self.loss_value = float(accelerator.reduce(self.window_loss, "mean")) / self.window_steps
        row = {
            "step": done,
            "loss": self.loss_value,
            "lr": self.learning_rate,
            "grad_norm": float(self.grad_norm),
            "images_per_second": self.window_steps * B / max(time.time() - self.window_start, 1e-9),
            "epoch": done * B / self.num_images,
            "replica_spread": self.replica_spread() if accelerator.num_processes > 1 else 0.0,
        }
        if self.config.report_to != "none":
            accelerator.log({k: v for k, v in row.items() if k != "step"}, step=done)
        if self.is_main:
            with self.metrics_path.open("a") as handle:
                handle.write(_json_line(row))
        self.window_loss.zero_()
        self.window_steps, self.window_start = 0, time.time()
        return {"loss": f"{self.loss_value:.4f}", "lr": f"{self.learning_rate:.2e}"}

    def save_checkpoint(self, done: int) -> None:
        self.check_finite()
        if self.is_main:
            state = TrainingState(
                step=done,
                config=self.config.to_dict(),
                lr_schedule=self.lr_schedule.state_dict(),
                ema_updates=self.ema.num_updates,
                grad_scaler=self.accelerator.scaler.state_dict() if self.accelerator.scaler is not None else None,
                images_seen=done * self.config.train_batch_size,
            )
            weights = self.unet.state_dict(), self.ema.state_dict(), self.optimizer.state_dict()
            save_checkpoint(self.checkpoints_dir, *weights, state)
            if self.config.checkpoints_total_limit is not None:
                prune_checkpoints(self.checkpoints_dir, self.config.checkpoints_total_limit)
            tqdm.write(f"saved checkpoint at step {done}", file=sys.stderr)
        self.accelerator.wait_for_everyone()

    def sample_grid(self, done: int) -> None:
        """Draw `num_sample_images` from the EMA network and save a grid (main process only)."""
        config, device = self.config, self.accelerator.device
        # image i of every grid is image i of `ddpm-hf sample --seed SEED` (its own stream: `sample_seed`)
        generators = [
            torch.Generator(device).manual_seed(sample_seed(config.seed, i)) for i in range(config.num_sample_images)
        ]
        steps = config.sample_inference_steps or config.num_train_timesteps
        self.ema_pipeline.set_progress_bar_config(desc=f"Sample grid at step {done}", leave=False)
        samples = self.ema_pipeline(
            config.num_sample_images, generator=generators, num_inference_steps=steps, eta=config.eta
        ).images
        grid = save_image_grid(samples, self.output_dir / "samples" / f"step-{done:07d}.png")
        grid.save(self.output_dir / "samples.png")
        if config.report_to in ("tensorboard", "all"):
            writer = self.accelerator.get_tracker("tensorboard", unwrap=True)
            writer.add_image("samples", np.asarray(grid), done, dataformats="HWC")

    def measure_fid(self, done: int) -> None:
        """FID of `fid_num_samples` EMA samples (spread over the processes); keep the EMA pipeline if it is the best."""
        config, T = self.config, self.config.num_train_timesteps
        steps = config.fid_inference_steps or T
        self.ema_pipeline.set_progress_bar_config(desc=f"FID samples at step {done}", leave=False,
                                                  disable=not self.is_main)  # fmt: skip
        respace = steps < T and isinstance(self.ema_pipeline.scheduler, DDPMScheduler)  # DDPM's shorter chain
        features = sample_features(
            self.ema_pipeline, self.inception, config.fid_num_samples, self.accelerator, seed=config.seed,
            batch_size=config.fid_batch_size, num_inference_steps=steps, respace=respace, eta=config.eta,
        )  # fmt: skip
        if self.is_main:
            fid = frechet_distance(*feature_statistics(features), self.reference.mu, self.reference.sigma)
            if config.report_to != "none":
                self.accelerator.log({"fid": fid}, step=done)
            with self.metrics_path.open("a") as handle:
                row = {
                    "step": done,
                    "fid": fid,
                    "fid_num_samples": config.fid_num_samples,
                    "sampler": self.sampler_record(),
                }
                handle.write(_json_line(row))
            tqdm.write(f"step {done}: FID {fid:.3f} ({config.fid_num_samples} samples)", file=sys.stderr)
            if fid < self.best_fid["fid"]:
                self._keep_best(done, fid, steps)
        self.accelerator.wait_for_everyone()

    def _keep_best(self, done: int, fid: float, steps: int) -> None:
        temporary = self.output_dir / ".best_pipeline.tmp"
        shutil.rmtree(temporary, ignore_errors=True)
        self._result_pipeline().save_pretrained(temporary)
        replace_folder(temporary, self.output_dir / "best_pipeline")
        self.best_fid.update(
            step=done,
            fid=fid,
            num_samples=self.config.fid_num_samples,
            num_inference_steps=steps,
            sampler=self.sampler_record(),
        )
        self.best_fid_path.write_text(json.dumps(self.best_fid, indent=2) + "\n")

    # ---- The result: the EMA pipeline, the summary, the loss curve ------------------------------------------------

    def sampler_record(self) -> dict[str, Any]:
        """The sampler of the FIDs (and grids), as metrics.jsonl, best_fid.json and the summary record it."""
        steps = self.config.fid_inference_steps or self.config.num_train_timesteps
        return sampler_record(self.ema_pipeline.scheduler, steps, self.config.eta)

    def _result_pipeline(self) -> DDPMPipeline:
        """The EMA network with the run's DDPM scheduler, whatever sampler the grids and FIDs use: what is saved."""
        return DDPMPipeline(unet=self.ema.model, scheduler=self.scheduler)

    def finish(self) -> dict[str, Any]:
        self.check_finite()
        summary: dict[str, Any] = {}
        if self.is_main:
            summary = self._save_result()
            if self.config.push_to_hub:
                _push_result(self.output_dir, self.config)
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()
        return summary

    def _save_result(self) -> dict[str, Any]:
        config, output_dir, B = self.config, self.output_dir, self.config.train_batch_size
        pipeline_dir = output_dir / "pipeline"
        self._result_pipeline().save_pretrained(pipeline_dir)
        metrics = [row for row in _read_metrics(self.metrics_path) if "loss" in row]
        if metrics:
            save_loss_curve([m["step"] for m in metrics], [m["loss"] for m in metrics], output_dir / "loss_curve.png")
        data = self.data
        summary = {
            "steps": config.max_train_steps,
            "resumed_from_step": self.start_step,
            "images_seen": config.max_train_steps * B,
            "epochs": config.max_train_steps * B / self.num_images,
            "wall_time_seconds": time.time() - self.started,
            "final_loss": metrics[-1]["loss"] if metrics else self.loss_value,
            "num_processes": self.accelerator.num_processes,
            "mixed_precision": self.accelerator.mixed_precision,
            "speedups": self.fast.describe(),
            "sampler": self.sampler_record(),
            "parameters": sum(p.numel() for p in self.ema.model.parameters()),
            "dataset": {
                "source": data.source,
                "split": data.split,
                "column": data.column,
                "num_images": self.num_images,
            },
            "pipeline": str(pipeline_dir),
            **({"best_fid": self.best_fid} if config.fid_steps is not None else {}),
            "config": config.to_dict(),
        }
        (output_dir / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"Saved the EMA pipeline to {pipeline_dir} and the summary to {output_dir / 'training_summary.json'}")
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
