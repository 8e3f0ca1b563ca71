"""`DDPMPipeline`: ancestral sampling (Algorithm 2 of Ho et al. 2020) and the paper's figures, as a diffusers pipeline.

The pipeline saves and loads in diffusers' standard layout with diffusers' own class names in `model_index.json`
(`["diffusers", "UNet2DModel"]`, `["diffusers", "DDPMScheduler"]`), so that what it saves or pushes loads with plain
`diffusers.DDPMPipeline` in an environment without this package, and gives the same images for the same seed.
A `diffusers.DDPMScheduler` becomes `ddpm_hf.DDPMScheduler`, which samples exactly as diffusers' does and also
computes the paper's bound; any other diffusers scheduler (DDIM, DPM-Solver++, Euler, ...) is kept and sampled with
as its contract says (see `ddpm_hf.samplers`), and saved under its own name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput, UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .acceleration import (
    CompiledWithFallback,
    Speedups,
    all_finite,
    autocast,
    describe_error,
    tf32_enabled,
    warn_switched_off,
)
from .cuda_graphs import Denoiser, GraphedReverseProcess, can_graph
from .pipeline_folder import check_pipeline_folder
from .samplers import check_eta, check_progressive_generation, check_respace, step_arguments
from .scheduler import DDPMScheduler

__all__ = ["DDPMPipeline", "ProgressiveGenerationOutput", "OUTPUT_TYPES"]

OUTPUT_TYPES = ("pil", "np", "pt")
# `from_pretrained` arguments that say how to download a repo id (the others are diffusers' loading arguments).
_DOWNLOAD_ARGUMENTS = ("revision", "cache_dir", "local_files_only", "token", "force_download")
Images = list[PIL.Image.Image] | np.ndarray | torch.Tensor
Generators = torch.Generator | list[torch.Generator] | None
StepCallback = Callable[["DDPMPipeline", int, int, dict[str, torch.Tensor]], dict[str, torch.Tensor]]
# What the figures see of each step: (i, t, x_{t'}, the scheduler's step output).
StepObserver = Callable[[int, int, torch.Tensor, BaseOutput], None]


@dataclass
class ProgressiveGenerationOutput(BaseOutput):
    """The result of `DDPMPipeline.progressive_generation` (the paper's Fig. 6).

    Attributes:
        images: the final samples x_0.
        pred_original_samples: x̂_0 predicted at each of `timesteps`, one entry per snapshot, each a batch.
        timesteps: the timesteps t at which the snapshots were taken, descending.
    """

    images: Images
    pred_original_samples: list[Images]
    timesteps: list[int]


def _adopt_scheduler(scheduler: SchedulerMixin) -> SchedulerMixin:
    """`scheduler` as the pipeline holds it: a `diffusers.DDPMScheduler` as the `ddpm_hf.DDPMScheduler` of its
    configuration (the same samples, plus the paper's bound), any other diffusers scheduler as it is."""
    if not isinstance(scheduler, SchedulerMixin):
        raise TypeError(f"scheduler must be a diffusers scheduler, got {type(scheduler).__name__}.")
    if type(scheduler) is diffusers.DDPMScheduler:
        return DDPMScheduler.from_config(scheduler.config)
    return scheduler


@dataclass
class _Acceleration:
    """The speed-up state of a pipeline: the settings, and what they built (a compiled UNet, a captured graph)."""

    speedups: Speedups | None = None  # None: never enabled, everything off
    compiled_unet: tuple[UNet2DModel, CompiledWithFallback] | None = None  # (the UNet, its compiled module)
    graphs: dict[tuple, GraphedReverseProcess] = field(default_factory=dict)  # at most one: the last batch shape

    def switch_off(self, name: str, reason: str) -> None:
        """A speed-up failed: warn, and sample without it from now on (the settings of `enable_speedups` change)."""
        warn_switched_off(name, reason, "sampling")
        self.speedups = dataclasses.replace(self.speedups or Speedups(), **{name: False})
        self.graphs.clear()


def _random_state(generator: Generators) -> Callable[[], None]:
    """A function that puts the generators (torch's default ones for None) back into their present state."""
    if generator is None:
        cpu, cuda = torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None

        def restore() -> None:
            torch.set_rng_state(cpu)
            if cuda is not None:
                torch.cuda.set_rng_state_all(cuda)

        return restore
    generators = generator if isinstance(generator, list) else [generator]
    states = [g.get_state() for g in generators]

    def restore_generators() -> None:
        for g, state in zip(generators, states, strict=True):
            g.set_state(state)

    return restore_generators


class DDPMPipeline(DiffusionPipeline):
    """Unconditional image generation with a DDPM (Ho et al. 2020), compatible with `diffusers.DDPMPipeline`.

    Args:
        unet: the noise-prediction network (see `ddpm_hf.create_unet` for the paper's presets).
        scheduler: a `ddpm_hf.DDPMScheduler` (a `diffusers.DDPMScheduler` is converted to it), or any other diffusers
            scheduler, which is kept (`ddpm_hf.samplers.scheduler_from_name` builds one by name).
    """

    model_cpu_offload_seq = "unet"
    _callback_tensor_inputs = ["image"]

    def __init__(self, unet: UNet2DModel, scheduler: SchedulerMixin):
        super().__init__()
        self.register_modules(unet=unet, scheduler=_adopt_scheduler(scheduler))
        self._acceleration = _Acceleration()

    def __setattr__(self, name: str, value: Any) -> None:
        """`pipeline.scheduler = other` adopts a diffusers scheduler as the constructor does."""
        if name == "scheduler" and isinstance(value, SchedulerMixin):
            value = _adopt_scheduler(value)
        super().__setattr__(name, value)

    # ---------------------------------------------------------------------------------------------------------
    # Saving and loading
    # ---------------------------------------------------------------------------------------------------------

    def register_to_config(self, **kwargs: Any) -> None:
        """Record components of this package under diffusers' own class names in `model_index.json`.

        diffusers would record `["ddpm_hf.scheduler", "DDPMScheduler"]`, which plain diffusers cannot load from
        the Hub; `ddpm_hf.DDPMScheduler` reads and writes the same configuration as `diffusers.DDPMScheduler`.
        """
        for name, value in kwargs.items():
            if isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[0], str):
                if value[0].split(".")[0] == __package__:
                    kwargs[name] = ("diffusers", value[1])
        super().register_to_config(**kwargs)

    def save_pretrained(
        self, save_directory: str | os.PathLike, safe_serialization: bool = True, **kwargs: Any
    ) -> None:
        """Save in diffusers' layout (`model_index.json`, `unet/`, `scheduler/`), weights as safetensors only."""
        if not safe_serialization:
            raise ValueError("ddpm_hf saves weights as safetensors only; safe_serialization=False is not supported.")
        super().save_pretrained(save_directory, safe_serialization=True, **kwargs)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, *, allow_pickle: bool = False, **kwargs: Any
    ) -> DDPMPipeline:
        """Load a pipeline saved by this package or by diffusers, from a folder or a Hub repo id.

        Both diffusers' layout (`unet/`, `scheduler/`) and the flat layout of the `google/ddpm-*` repos (config and
        weights at the root) load. Weights must be safetensors unless `allow_pickle=True` is passed: pickle files
        can run arbitrary code when loaded, so only allow them for files you trust. `model_index.json` may name only
        a `UNet2DModel` and a diffusers scheduler (any other class, such as a nested pipeline, is refused).

        A repo id is downloaded through the Hub cache (see `ddpm_hf.hub.download_pipeline`): configurations and
        safetensors weights only (pickle files too with `allow_pickle=True`), from the cache alone when offline
        (`HF_HUB_OFFLINE=1` or `local_files_only=True`).

        Args:
            pretrained_model_name_or_path: a local folder or a Hub repo id such as `"google/ddpm-cifar10-32"`.
            allow_pickle: also accept `.bin` (pickle) weights when no safetensors file is present.
            **kwargs: `revision`, `cache_dir`, `local_files_only`, `token`, `force_download` for a repo id, and
                anything else `diffusers.DiffusionPipeline.from_pretrained` takes (`torch_dtype`, ...).

        Raises:
            FileNotFoundError: a local folder without a pipeline or without weights (the message names the file).
            ValueError: pickle weights without `allow_pickle=True`, a corrupt weights file, or a `model_index.json`
                naming a class a DDPM pipeline cannot hold (named).
            ddpm_hf.hub.HubError: the Hub could not give a repo (no such repo or revision, offline, unreachable, no
                answer within `DDPM_HF_HUB_TIMEOUT` seconds); also huggingface_hub's own `RepositoryNotFoundError`,
                `RevisionNotFoundError` or `LocalEntryNotFoundError`.
        """
        from .hub import download_pipeline  # the Hub client only where it is needed

        if kwargs.get("use_safetensors") is False and not allow_pickle:
            raise ValueError(
                "use_safetensors=False loads pickle weights, which can run arbitrary code: pass allow_pickle=True as "
                "well (--allow-pickle on the command line) only if you trust them."
            )
        if not allow_pickle:
            kwargs["use_safetensors"] = True
        folder = Path(pretrained_model_name_or_path)
        if folder.is_dir():
            check_pipeline_folder(folder, allow_pickle=allow_pickle)
        else:
            if kwargs.pop("proxies", None) is not None:
                raise ValueError("proxies is not supported: set the HTTPS_PROXY environment variable instead.")
            download = {name: kwargs.pop(name) for name in _DOWNLOAD_ARGUMENTS if name in kwargs}
            folder = download_pipeline(str(pretrained_model_name_or_path), allow_pickle=allow_pickle, **download)
        return super().from_pretrained(folder, **kwargs)

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
        safe_serialization: bool = True,
        *,
        revision: str | None = None,
    ) -> str:
        """Save the pipeline (safetensors) and push it to the Hub repo `repo_id` with a model card.

        The card describes the pipeline from its configuration (see `ddpm_hf.hub.push_to_hub`, which also pushes a
        training run's summary, evaluation and sample grid). The repo is created if needed; `private` applies to a
        new repo. The token defaults to `HF_TOKEN` or the one saved by `hf auth login`.

        Args:
            repo_id: "user/name" or "org/name".
            commit_message: default "Upload DDPM pipeline with ddpm-hf".
            private: create the repo as private.
            token: a token with write access.
            create_pr: open a pull request instead of committing to the branch.
            safe_serialization: must be True (weights are safetensors only).
            revision: the branch to push to (created if missing); default main.

        Returns:
            The commit URL (a `huggingface_hub.CommitInfo`, with `.oid` and `.pr_url`).
        """
        from .hub import push_to_hub as push_folder_to_hub  # the Hub client and model cards only where pushing

        if not safe_serialization:
            raise ValueError("ddpm_hf pushes weights as safetensors only; safe_serialization=False is not supported.")
        with tempfile.TemporaryDirectory(prefix="ddpm-hf-push-") as folder:
            self.save_pretrained(folder)
            return push_folder_to_hub(
                folder,
                repo_id,
                token=token,
                private=private,
                revision=revision,
                commit_message=commit_message,
                create_pr=create_pr,
            )

    # ---------------------------------------------------------------------------------------------------------
    # Sampling
    # ---------------------------------------------------------------------------------------------------------

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the UNet models."""
        size = self.unet.config.sample_size
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        return (self.unet.config.in_channels, height, width)

    def _check_call(self, batch_size: int, generator: Generators, output_type: str) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(
                f"generator is a list of {len(generator)} generators, but batch_size is {batch_size}: pass one "
                "generator per image."
            )
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {list(OUTPUT_TYPES)}, got {output_type!r}.")

    def _initial_noise(self, batch_size: int, generator: Generators) -> torch.Tensor:
        """x_T ~ N(0, σ_max² I): N(0, I) (Algorithm 2, line 1) drawn as diffusers draws it, times the scheduler's
        `init_noise_sigma` (1 for DDPM and DDIM, σ_max for the sigma-space schedulers such as Euler)."""
        device = self._execution_device
        shape = (batch_size, *self.image_shape)
        if device.type == "mps":  # randn is not reproducible on mps
            noise = randn_tensor(shape, generator=generator, dtype=self.unet.dtype).to(device)
        else:
            noise = randn_tensor(shape, generator=generator, device=device, dtype=self.unet.dtype)
        return noise * self.scheduler.init_noise_sigma

    def _set_timesteps(self, num_inference_steps: int, respace: bool = False) -> None:
        """The chain to sample, set anew per call (which also resets a multistep scheduler's history)."""
        check_respace(self.scheduler, respace)
        if isinstance(self.scheduler, DDPMScheduler):
            self.scheduler.set_timesteps(num_inference_steps, respace=respace)
        else:
            self.scheduler.set_timesteps(num_inference_steps)

    def _require_ddpm(self, what: str) -> None:
        """Refuse `what`, one of the paper's figures that diffuses with q(x_t | x_0) and runs DDPM's chain from it."""
        if not isinstance(self.scheduler, DDPMScheduler):
            raise ValueError(
                f"{what} runs DDPM's reverse chain from x_t ~ q(x_t | x_0), which the pipeline's "
                f"{type(self.scheduler).__name__} does not sample: set pipeline.scheduler = "
                "ddpm_hf.DDPMScheduler.from_config(pipeline.scheduler.config) first."
            )

    def _reverse_process(
        self,
        image: torch.Tensor,
        generator: Generators,
        eta: float | None = None,
        on_step: StepObserver | None = None,
        callback_on_step_end: StepCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("image",),
    ) -> torch.Tensor:
        """Run the scheduler's chain from `image` over `self.scheduler.timesteps` and return the last sample: replayed
        from a captured step with CUDA graphs on (DDPM and DDIM, no callback), else by the step loop."""
        was_training = self.unet.training
        self.unet.eval()  # sampling never uses dropout, whatever mode the caller left the network in
        try:
            # TF32 as the speed-ups say, either way (PyTorch's default has it on for cuDNN convolutions); without
            # `enable_speedups`, PyTorch's defaults, as diffusers runs
            enabled = self._acceleration.speedups is not None
            with tf32_enabled(self.active_speedups().tf32) if enabled else contextlib.nullcontext():
                if on_step is None and callback_on_step_end is None:
                    sample = self._graphed_sample(image, generator, eta)
                    if sample is not None:
                        return sample
                return self._step_loop(
                    image, generator, eta, on_step, callback_on_step_end, callback_on_step_end_tensor_inputs
                )
        finally:
            self.unet.train(was_training)

    def _step_loop(
        self,
        image: torch.Tensor,
        generator: Generators,
        eta: float | None,
        on_step: StepObserver | None,
        callback_on_step_end: StepCallback | None,
        callback_on_step_end_tensor_inputs: Sequence[str],
    ) -> torch.Tensor:
        """The loop of diffusers' scheduler contract (Algorithm 2, lines 2-5, for DDPM): the network sees
        `scale_model_input(x_t, t)` (x_t itself for DDPM and DDIM), and `step` gets the generator when it draws noise
        and η when given. A scheduler of order 2 (Heun) lists each inner timestep twice: one network evaluation per
        entry."""
        speedups = self.active_speedups()
        denoise = self._denoiser(speedups)
        step_kwargs = step_arguments(self.scheduler, generator, eta)
        timesteps = self.scheduler.timesteps
        # with speed-ups the network reads t from the device: no host-to-device copy (and wait) per step
        network_timesteps = timesteps if speedups == Speedups.off() else timesteps.to(image.device)
        for i, t in enumerate(self.progress_bar(timesteps)):
            model_input = self.scheduler.scale_model_input(image, t)
            model_output = denoise(model_input, network_timesteps[i])  # ε_θ(x_t, t)
            step = self.scheduler.step(model_output, t, image, **step_kwargs)
            image = step.prev_sample  # x_{t−1} = μ_θ(x_t, t) + σ_t z for DDPM
            if on_step is not None:
                on_step(i, int(t), image, step)
            if callback_on_step_end is not None:
                tensors = {"image": image} if "image" in callback_on_step_end_tensor_inputs else {}
                image = callback_on_step_end(self, i, int(t), tensors).get("image", image)
        return image

    def _graphed_sample(self, image: torch.Tensor, generator: Generators, eta: float | None) -> torch.Tensor | None:
        """x_0 from the captured step (`ddpm_hf.cuda_graphs`), or None where CUDA graphs are off or do not apply.

        A capture or replay that raises, or non-finite samples where the step loop's are finite, switch CUDA graphs
        off with a warning; the generators are put back, so the step loop then draws the same noise."""
        speedups = self.active_speedups()
        if not (speedups.cuda_graphs and can_graph(self.scheduler)):
            return None
        restore_generators = _random_state(generator)
        try:
            process = self._graphed_reverse_process(image, self._denoiser(speedups), speedups, eta)
            sample = process.run(image, generator, self.progress_bar)
        except torch.OutOfMemoryError:
            raise  # the batch does not fit: the caller's to handle, not a failed optimization
        except Exception as error:  # noqa: BLE001 - an optimization never ends the sampling
            self._acceleration.switch_off("cuda_graphs", describe_error(error))
            restore_generators()
            return None
        if all_finite(sample):
            return sample
        restore_generators()
        plain = self._step_loop(image, generator, eta, None, None, ())
        if all_finite(plain):
            self._acceleration.switch_off("cuda_graphs", "non-finite samples where the step loop's are finite")
        return plain

    # ---------------------------------------------------------------------------------------------------------
    # Speed-ups (ddpm_hf.acceleration): bf16, TF32, channels-last, torch.compile, CUDA graphs
    # ---------------------------------------------------------------------------------------------------------

    def enable_speedups(self, speedups: Speedups | None = None) -> DDPMPipeline:
        """Sample faster on a GPU: bf16 autocast of the UNet, TF32, channels-last, `torch.compile` and CUDA graphs
        over the reverse loop, each switchable through `speedups` (default: all on for CUDA, off elsewhere).

        x_t and the scheduler's arithmetic stay in float32 and the noise is drawn from the same generators in the
        same order, so the images differ from those of the plain pipeline (and of `diffusers.DDPMPipeline`) only by
        the rounding of the faster arithmetic; bf16's deviation is measured in `benchmarks/README.md`. CUDA graphs
        replay DDPM's step (fixed variances) and DDIM's (any η) when no step callback is given (other schedulers run
        the step loop); the graph of the last batch shape and chain length is kept. Channels-last converts the UNet's
        weights in place at the first call (saving is unaffected). A speed-up that fails (compile or capture raises,
        or gives non-finite images where the plain computation does not) is switched off with a warning, and the
        call goes on without it. Returns the pipeline.
        """
        self._acceleration = _Acceleration(speedups if speedups is not None else Speedups())
        return self

    def disable_speedups(self) -> DDPMPipeline:
        """Back to the plain computation, identical to `diffusers.DDPMPipeline`. Returns the pipeline."""
        return self.enable_speedups(Speedups.off())

    def active_speedups(self) -> Speedups:
        """The speed-ups that sampling uses now, on the pipeline's device (all off unless `enable_speedups`)."""
        speedups = self._acceleration.speedups
        return Speedups.off() if speedups is None else speedups.resolve(self._execution_device)

    def _denoiser(self, speedups: Speedups) -> Denoiser:
        """The network as the reverse loop calls it, `(x_t, t) -> output`, with the speed-ups applied."""
        if speedups == Speedups.off():
            return lambda x, t: self.unet(x, t).sample
        unet = self.unet
        if speedups.channels_last:
            unet.to(memory_format=torch.channels_last)
        if speedups.compile:
            acceleration = self._acceleration
            if acceleration.compiled_unet is None or acceleration.compiled_unet[0] is not self.unet:
                fall_back = lambda reason: acceleration.switch_off("compile", reason)  # noqa: E731
                acceleration.compiled_unet = (self.unet, CompiledWithFallback(self.unet, fall_back))
            unet = acceleration.compiled_unet[1]
        device = self._execution_device

        def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if speedups.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, speedups.bf16):
                return unet(x, t).sample.to(x.dtype)

        return denoise

    def _graphed_reverse_process(
        self, image: torch.Tensor, denoise: Denoiser, speedups: Speedups, eta: float | None
    ) -> GraphedReverseProcess:
        """The captured reverse process for this batch shape, chain length, network, scheduler, η and speed-ups."""
        key = (
            tuple(image.shape), image.dtype, image.device, len(self.scheduler.timesteps), speedups, eta,
            id(self.unet), type(self.scheduler), repr(sorted(self.scheduler.config.items())),
        )  # fmt: skip
        graphs = self._acceleration.graphs
        if key not in graphs:
            graphs.clear()  # one graph at a time: each keeps its own activation memory
            graphs[key] = GraphedReverseProcess(
                denoise, self.scheduler, tuple(image.shape), image.dtype, image.device, capture=image.is_cuda, eta=eta
            )
        return graphs[key]

    def _postprocess(self, image: torch.Tensor, output_type: str) -> Images:
        """Map [−1, 1] to [0, 1] and convert to PIL images, a NHWC numpy array or a NCHW tensor."""
        image = (image / 2 + 0.5).clamp(0, 1)
        if output_type == "pt":
            return image
        image = image.cpu().permute(0, 2, 3, 1).float().numpy()
        return self.numpy_to_pil(image) if output_type == "pil" else image

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: Generators = None,
        num_inference_steps: int = 1000,
        output_type: str = "pil",
        return_dict: bool = True,
        respace: bool = False,
        callback_on_step_end: StepCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("image",),
        eta: float | None = None,
    ) -> ImagePipelineOutput | tuple:
        """Draw `batch_size` samples by ancestral sampling (Algorithm 2), or with the pipeline's other scheduler.

        Args:
            batch_size: the number of images.
            generator: a `torch.Generator`, or a list of one per image so that each image depends on its own seed
                only, not on the batch it was drawn in.
            num_inference_steps: the number of reverse steps (the paper: 1000 = T).
            output_type: "pil", "np" (NHWC float in [0, 1]) or "pt" (NCHW tensor in [0, 1]).
            return_dict: return an `ImagePipelineOutput` rather than a tuple.
            respace: with fewer steps than T, sample on the respaced chain (see `DDPMScheduler.set_timesteps`);
                DDPM only.
            callback_on_step_end: called after every step as `callback(pipeline, i, t, {"image": x_{t−1}})`; the
                "image" it returns, if any, replaces x_{t−1}.
            callback_on_step_end_tensor_inputs: the tensors passed to the callback (only "image").
            eta: DDIM's η (0: deterministic, as `diffusers.DDPMPipeline` samples with DDIM; 1: DDPM-like noise), for
                schedulers whose step takes it; default: the step's own default.

        Returns:
            `ImagePipelineOutput(images=...)`, or `(images,)`.
        """
        self._check_call(batch_size, generator, output_type)
        unknown = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise ValueError(f"callback_on_step_end_tensor_inputs may only name {self._callback_tensor_inputs}.")
        check_eta(self.scheduler, eta)
        self._set_timesteps(num_inference_steps, respace)
        image = self._initial_noise(batch_size, generator)
        image = self._reverse_process(
            image,
            generator,
            eta,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )
        images = self._postprocess(image, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

    # ---------------------------------------------------------------------------------------------------------
    # The paper's figures
    # ---------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def progressive_generation(
        self,
        batch_size: int = 1,
        generator: Generators = None,
        num_inference_steps: int = 1000,
        num_snapshots: int = 10,
        output_type: str = "pil",
        eta: float | None = None,
    ) -> ProgressiveGenerationOutput:
        """Progressive generation (Fig. 6): the prediction x̂_0 along the reverse chain.

        The samples are the same as `__call__` draws from the same generator; `num_snapshots` evenly spaced steps
        (always including the last) record x̂_0 = (x_t − √(1 − ᾱ_t) ε_θ(x_t, t)) / √ᾱ_t (eq. 15). Another scheduler
        works if its step returns x̂_0 (`pred_original_sample`: DDIM, Euler, Heun, ...); one that does not is refused.
        """
        self._check_call(batch_size, generator, output_type)
        if num_snapshots < 1:
            raise ValueError(f"num_snapshots must be ≥ 1, got {num_snapshots}.")
        check_progressive_generation(self.scheduler)
        check_eta(self.scheduler, eta)
        self._set_timesteps(num_inference_steps)
        image = self._initial_noise(batch_size, generator)
        steps = len(self.scheduler.timesteps)
        keep = {round(k * (steps - 1) / max(num_snapshots - 1, 1)) for k in range(min(num_snapshots, steps))}
        snapshots: list[tuple[int, torch.Tensor]] = []

        def record(i: int, t: int, _: torch.Tensor, step: BaseOutput) -> None:
            if i in keep:
                snapshots.append((t, step.pred_original_sample))

        image = self._reverse_process(image, generator, eta, on_step=record)
        return ProgressiveGenerationOutput(
            images=self._postprocess(image, output_type),
            pred_original_samples=[self._postprocess(x, output_type) for _, x in snapshots],
            timesteps=[t for t, _ in snapshots],
        )

    def _check_images(self, name: str, images: torch.Tensor, bounded: bool = True) -> torch.Tensor:
        """Check a batch of images (N, C, H, W) for this UNet, in [−1, 1] unless `bounded` is False (x_t is not)."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != self.image_shape:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(
                f"{name} must be a tensor of shape (N, {', '.join(map(str, self.image_shape))}), got {shape}."
            )
        if bounded and (images.min() < -1 or images.max() > 1):
            raise ValueError(f"{name} must be scaled to [-1, 1].")
        return images.to(device=self._execution_device, dtype=self.unet.dtype)

    def _check_timestep(self, timestep: int) -> int:
        T = self.scheduler.config.num_train_timesteps
        if not 0 <= int(timestep) < T:
            raise ValueError(f"timestep must lie in [0, {T}), got {timestep}.")
        return int(timestep)

    def _diffuse(self, x_0: torch.Tensor, timestep: int, generator: Generators) -> torch.Tensor:
        """x_t ~ q(x_t | x_0) (eq. 4), one noise draw per image."""
        noise = randn_tensor(x_0.shape, generator=generator, device=x_0.device, dtype=x_0.dtype)
        return self.scheduler.add_noise(x_0, noise, torch.full((x_0.shape[0],), timestep, dtype=torch.long))

    @torch.no_grad()
    def denoise(
        self,
        noisy_images: torch.Tensor,
        timestep: int,
        generator: Generators = None,
        output_type: str = "pil",
    ) -> ImagePipelineOutput:
        """Run the reverse process from x_t at `timestep` down to x_0, every step of the trained chain (DDPM only)."""
        self._require_ddpm("denoise")
        timestep = self._check_timestep(timestep)
        image = self._check_images("noisy_images", noisy_images, bounded=False)
        if not torch.isfinite(image).all():
            raise ValueError("noisy_images must be finite.")
        self._check_call(image.shape[0], generator, output_type)
        self.scheduler.set_timesteps(timesteps=list(range(timestep, -1, -1)))
        return ImagePipelineOutput(images=self._postprocess(self._reverse_process(image, generator), output_type))

    @torch.no_grad()
    def shared_latent_samples(
        self,
        image: torch.Tensor,
        timestep: int,
        num_samples: int = 4,
        generator: Generators = None,
        output_type: str = "pil",
    ) -> tuple[Images, Images]:
        """Samples that share x_t (Fig. 7): x_t ~ q(x_t | x_0) of one image, then `num_samples` draws of p_θ(x_0 | x_t).

        Args:
            image: x_0, a tensor (1, C, H, W) in [−1, 1].
            timestep: t; the larger, the less the samples keep of `image` (Fig. 7 uses t = 1000, 750, 500, 250).
            num_samples: how many x_0 to draw from the shared x_t.
            generator: one generator (it draws x_t and then the reverse chain) or a list of `num_samples`.

        Returns:
            (samples, x_t), both in `output_type`.
        """
        self._require_ddpm("shared_latent_samples (Fig. 7)")
        x_0 = self._check_images("image", image)
        if x_0.shape[0] != 1:
            raise ValueError(f"image must hold exactly one image, got {x_0.shape[0]}.")
        self._check_call(num_samples, generator, output_type)
        timestep = self._check_timestep(timestep)
        first = generator[0] if isinstance(generator, list) else generator
        x_t = self._diffuse(x_0, timestep, first)
        samples = self.denoise(x_t.repeat(num_samples, 1, 1, 1), timestep, generator, output_type).images
        return samples, self._postprocess(x_t, output_type)

    @torch.no_grad()
    def interpolate(
        self,
        image_a: torch.Tensor,
        image_b: torch.Tensor,
        timestep: int,
        lambdas: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
        generator: torch.Generator | None = None,
        output_type: str = "pil",
    ) -> ImagePipelineOutput:
        """Interpolation in latent space (Fig. 8): x̄_t = (1 − λ) x_t + λ x'_t, decoded by the reverse process.

        x_t ~ q(x_t | x_0) and x'_t ~ q(x_t | x'_0) use `q` as a stochastic encoder; the reverse process is run from
        x̄_t with the same noise for every λ ("we fixed the noise for different values of λ so x_t and x'_t remain
        the same", Appendix), so the images differ only through λ.

        Args:
            image_a, image_b: x_0 and x'_0, tensors (1, C, H, W) in [−1, 1].
            timestep: t, how far to diffuse before mixing (Fig. 8 uses 500 of 1000 steps).
            lambdas: the mixing weights λ, one output image each.
            generator: the source of all randomness.
        """
        self._require_ddpm("interpolate (Fig. 8)")
        x_a = self._check_images("image_a", image_a)
        x_b = self._check_images("image_b", image_b)
        if x_a.shape[0] != 1 or x_b.shape[0] != 1:
            raise ValueError("image_a and image_b must each hold exactly one image.")
        if len(lambdas) == 0:
            raise ValueError("lambdas must not be empty.")
        timestep = self._check_timestep(timestep)
        x_t_a = self._diffuse(x_a, timestep, generator)
        x_t_b = self._diffuse(x_b, timestep, generator)
        mix = torch.tensor(list(lambdas), device=x_a.device, dtype=x_a.dtype).reshape(-1, 1, 1, 1)
        x_t = (1 - mix) * x_t_a + mix * x_t_b
        # The same reverse-process noise for every λ: one seed, one generator per image.
        seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator).item())
        device = generator.device if generator is not None else torch.device("cpu")
        generators = [torch.Generator(device).manual_seed(seed) for _ in lambdas]
        return self.denoise(x_t, timestep, generators, output_type)
