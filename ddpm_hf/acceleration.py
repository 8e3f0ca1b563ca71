"""GPU speed-ups for training and sampling, each one switchable.

* `bf16`: the UNet runs under bfloat16 autocast (matrix products and convolutions in bf16, accumulated in float32);
  x_t and the scheduler's arithmetic stay float32. On by default on CUDA GPUs that have bf16.
* `tf32`: float32 matrix products and convolutions on tensor cores (inputs rounded to a 10-bit mantissa).
* `channels_last`: the UNet's weights and inputs in NHWC layout, what cuDNN's tensor-core convolutions read.
* `compile`: the UNet compiled by `torch.compile` (TorchInductor fuses GroupNorm, SiLU and the residual additions).
* `cuda_graphs`: sampling only: one reverse step of DDPM or DDIM, ε_θ(x_t, t) and the update to x_{t'}, captured
  once as a CUDA graph and replayed for every t (see `ddpm_hf.cuda_graphs`).

A setting of `None` means "where it is safe": on a CUDA device, and off elsewhere. `True` or `False` forces it;
channels-last, compile and bf16 also run on the CPU when forced (the tests do), and `cuda_graphs` forced on the CPU
runs the same fixed-buffer reverse step without capturing it; TF32 exists on CUDA only and stays off elsewhere.
None of them changes what is computed beyond floating-point rounding, except bf16, whose deviation from float32 is
measured (`benchmarks/README.md`); the plain `DDPMPipeline.__call__` stays bit-identical to `diffusers.DDPMPipeline`
unless `enable_speedups` is called.

An optimization never ends a job: if `torch.compile` or a CUDA-graph capture raises, or gives non-finite output where
the plain computation does not, the sampler or trainer warns once (`warn_switched_off`, naming the speed-up and the
error), switches that speed-up off and goes on without it. Running out of GPU memory is not such a failure (the batch
does not fit either way) and is raised as it is.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "Speedups",
    "training_precision",
    "tf32_enabled",
    "autocast",
    "add_speedup_arguments",
    "speedups_from_arguments",
    "CompiledWithFallback",
    "all_finite",
    "describe_error",
    "warn_switched_off",
]


@dataclass(frozen=True)
class Speedups:
    """Which speed-ups to use; `None` for each: on a CUDA device only (see the module docstring)."""

    bf16: bool | None = dataclasses.field(default=None, metadata={"help": "bfloat16 autocast of the UNet"})
    tf32: bool | None = dataclasses.field(default=None, metadata={"help": "TF32 matrix products and convolutions"})
    channels_last: bool | None = dataclasses.field(default=None, metadata={"help": "NHWC UNet weights and inputs"})
    compile: bool | None = dataclasses.field(default=None, metadata={"help": "torch.compile of the UNet"})
    cuda_graphs: bool | None = dataclasses.field(default=None, metadata={"help": "CUDA graphs over the reverse loop"})

    @classmethod
    def off(cls) -> Speedups:
        """Every speed-up off: the plain, diffusers-identical computation."""
        return cls(bf16=False, tf32=False, channels_last=False, compile=False, cuda_graphs=False)

    def resolve(self, device: torch.device | str) -> Speedups:
        """The settings that apply on `device`: every field True or False."""
        device = torch.device(device)
        cuda = device.type == "cuda"
        bf16_default = cuda and torch.cuda.is_bf16_supported()
        return Speedups(
            bf16=bf16_default if self.bf16 is None else self.bf16,
            tf32=cuda and self.tf32 is not False,
            channels_last=cuda if self.channels_last is None else self.channels_last,
            compile=cuda if self.compile is None else self.compile,
            cuda_graphs=cuda if self.cuda_graphs is None else self.cuda_graphs,
        )

    def describe(self) -> dict[str, bool | None]:
        """The settings as a plain dict (for reports and logs)."""
        return dataclasses.asdict(self)


def training_precision(requested: str) -> str:
    """The mixed precision a training run uses: `requested`, or for "auto" the one `accelerate launch` or
    `accelerate config` chose (`ACCELERATE_MIXED_PRECISION`), else "bf16" on a CUDA GPU that has it, else "no"."""
    if requested != "auto":
        return requested
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if launched:
        return launched
    on_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return "bf16" if not on_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


@contextlib.contextmanager
def tf32_enabled(enabled: bool) -> Iterator[None]:
    """TF32 for float32 matrix products and cuDNN convolutions while the block runs; the previous settings after."""
    matmul, cudnn = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(matmul)
        torch.backends.cudnn.allow_tf32 = cudnn


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on `device` when `bf16`, else nothing. Autocast's weight cache is off, as CUDA graph capture
    needs (and sampling gains nothing from it: every step runs the network once)."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)


def _on_off_auto(text: str) -> bool | None:
    value = {"on": True, "true": True, "yes": True, "off": False, "false": False, "no": False, "auto": None}.get(
        text.lower(), "bad"
    )
    if value == "bad":
        raise argparse.ArgumentTypeError(f"{text!r} is not one of auto, on, off")
    return value


def add_speedup_arguments(parser: argparse.ArgumentParser) -> None:
    """The sampling commands' options `--bf16 --tf32 --channels-last --compile --cuda-graphs`, each auto|on|off."""
    group = parser.add_argument_group("speed-ups (auto: on a CUDA GPU, off elsewhere; see ddpm_hf.acceleration)")
    for field in dataclasses.fields(Speedups):
        group.add_argument(
            f"--{field.name.replace('_', '-')}",
            type=_on_off_auto,
            default=None,
            metavar="auto|on|off",
            help=f"{field.metadata['help']} (default: auto)",
        )


def speedups_from_arguments(arguments: argparse.Namespace) -> Speedups:
    """The `Speedups` of the options `add_speedup_arguments` added, which are taken out of `arguments`."""
    return Speedups(**{field.name: arguments.__dict__.pop(field.name) for field in dataclasses.fields(Speedups)})


# ---------------------------------------------------------------------------------------------------------------------
# Falling back: a speed-up that fails is switched off, and the work goes on
# ---------------------------------------------------------------------------------------------------------------------


def describe_error(error: BaseException) -> str:
    """An error in one line: its type and the first line of its message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def warn_switched_off(name: str, reason: str, work: str) -> None:
    """The one warning of a speed-up that failed and is switched off."""
    warnings.warn(
        f"ddpm_hf: the speed-up {name} failed ({reason}); it is switched off and {work} goes on without it.",
        RuntimeWarning,
        stacklevel=3,
    )


def all_finite(output: Any) -> bool:
    """Whether a network's output (a tensor, or a diffusers output whose first field is one) is finite."""
    tensor = output if isinstance(output, torch.Tensor) else output[0]
    return bool(torch.isfinite(tensor).all())


class CompiledWithFallback:
    """`torch.compile(module)` that falls back to `module` itself.

    Compilation is lazy, so a failure shows at the first call: if compiling, or that call, raises, or the first call's
    output is not finite where the module's own output is, `on_failure(reason)` is called and every call from then on
    runs the module uncompiled (the failed call included). Only the first call is checked (one host synchronisation):
    compiled code does not change between calls of the same shapes. Running out of memory is not a failure of the
    optimization (the batch does not fit): `torch.OutOfMemoryError` propagates.
    """

    def __init__(self, module: torch.nn.Module, on_failure: Callable[[str], None]):
        self.module, self.on_failure, self.checked = module, on_failure, False
        self.compiled: Callable | None = None
        try:
            self.compiled = torch.compile(module)
        except Exception as error:  # noqa: BLE001 - any failure of the optimization falls back
            self._fall_back(describe_error(error))

    def _fall_back(self, reason: str) -> None:
        self.compiled = None
        self.on_failure(reason)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is None:
            return self.module(*args, **kwargs)
        if self.checked:
            return self.compiled(*args, **kwargs)
        self.checked = True
        try:
            output = self.compiled(*args, **kwargs)
        except torch.OutOfMemoryError:
            raise  # the batch does not fit, compiled or not: the caller's to handle, not a failed optimization
        except Exception as error:  # noqa: BLE001
            self._fall_back(describe_error(error))
            return self.module(*args, **kwargs)
        if all_finite(output):
            return output
        plain = self.module(*args, **kwargs)
        if all_finite(plain):
            self._fall_back("non-finite output where the uncompiled network's is finite")
        return plain
