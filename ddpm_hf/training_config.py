"""The configuration of a training run: one dataclass, its presets, and how files and the command line fill it.

Precedence, lowest first: the dataclass defaults, the preset (`--preset`, or `preset:` in the file; "quickstart" when
none is named), the YAML or JSON file (`--config`), the command-line options. Every field is a command-line option
of the same name with dashes (`train_batch_size` is `--train-batch-size`).

The "ddpm-cifar10" preset is the paper's CIFAR-10 recipe (Ho et al. 2020, §4 and Appendix B): T = 1000, linear β
from 1e-4 to 0.02, ε-prediction with L_simple, Adam at 2e-4 with 5,000 warm-up steps, a global batch of 128,
gradient clipping at 1.0, dropout 0.1, random horizontal flips, EMA decay 0.9999, 800k steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .samplers import scheduler_from_name
from .scheduler import BETA_SCHEDULES, LOSS_TYPES, PREDICTION_TYPES, VARIANCE_TYPES
from .unet import PRESETS as UNET_PRESETS
from .unet import check_unet_config, load_unet_config, unet_config

__all__ = ["TrainingConfig", "TRAINING_PRESETS", "parse_training_config", "load_config_file", "build_parser"]

MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
LR_SCHEDULES = ("constant", "linear", "cosine")
REPORT_TO = ("tensorboard", "wandb", "all", "none")


def _help(text: str, default: Any = dataclasses.MISSING) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass
class TrainingConfig:
    """Everything a training run depends on. See `TRAINING_PRESETS` for the paper's settings."""

    # Data
    dataset: str | None = _help("Hub name, dataset folder or image folder; none: the built-in shapes", None)
    split: str = _help("the split to train on", "train")
    image_column: str | None = _help("the image column (found by its feature type when not given)", None)
    resolution: int | None = _help("image size; none: the UNet's sample_size", None)
    center_crop: bool = _help("resize the shorter side and crop the centre (else: squash to a square)", True)
    random_flip: bool = _help("random horizontal flips", True)
    cache_dir: str | None = _help(
        "the datasets cache folder, and where the prepared images go (default: ddpm_hf's cache, $DDPM_HF_CACHE)", None
    )
    # Model
    unet: str = _help(f"a UNet preset ({', '.join(UNET_PRESETS)}) or a UNet2DModel config.json", "ddpm-small")
    dropout: float | None = _help("override the UNet's dropout", None)
    # Diffusion (the scheduler saved with the pipeline)
    num_train_timesteps: int = _help("T", 1000)
    beta_start: float = _help("β_1", 1e-4)
    beta_end: float = _help("β_T", 0.02)
    beta_schedule: str = _help(f"one of {', '.join(BETA_SCHEDULES)}", "linear")
    prediction_type: str = _help(f"what the network predicts: {', '.join(PREDICTION_TYPES)}", "epsilon")
    variance_type: str = _help(f"σ_t² of the reverse process: {', '.join(VARIANCE_TYPES)}", "fixed_small")
    loss_type: str = _help("simple: L_simple (eq. 14); vlb: the true bound (Table 2)", "simple")
    # Optimisation
    train_batch_size: int = _help("the global batch: images per optimizer step over all processes", 128)
    gradient_accumulation_steps: int = _help("micro-batches per optimizer step", 1)
    max_train_steps: int = _help("optimizer steps", 800_000)
    learning_rate: float = _help("Adam's learning rate after warm-up", 2e-4)
    lr_warmup_steps: int = _help("linear warm-up steps", 5000)
    lr_schedule: str = _help(f"after warm-up: {', '.join(LR_SCHEDULES)}", "constant")
    adam_beta1: float = _help("Adam β1", 0.9)
    adam_beta2: float = _help("Adam β2", 0.999)
    adam_epsilon: float = _help("Adam ε", 1e-8)
    weight_decay: float = _help("decoupled weight decay (AdamW); 0 is the paper's Adam", 0.0)
    max_grad_norm: float | None = _help("clip the gradient norm to this; none: no clipping", 1.0)
    ema_decay: float = _help("decay of the exponential moving average of the weights", 0.9999)
    ema_warmup: bool = _help("use min(decay, (1+n)/(10+n)) early on", False)
    mixed_precision: str = _help(
        f"one of {', '.join(MIXED_PRECISION)}; auto: `accelerate launch`'s choice, else bf16 on CUDA GPUs that have it",
        "auto",
    )
    # Speed-ups (ddpm_hf.acceleration): none (auto) turns each on for CUDA GPUs only
    tf32: bool | None = _help("TF32 matrix products and convolutions; auto: on CUDA GPUs", None)
    channels_last: bool | None = _help("channels-last (NHWC) UNet weights and inputs; auto: on CUDA GPUs", None)
    torch_compile: bool | None = _help("compile the UNet with torch.compile; auto: on CUDA GPUs", None)
    seed: int = _help("the run is a function of the configuration and this seed", 0)
    # Outputs
    output_dir: str = _help("where the pipeline, checkpoints, samples and logs go", "outputs/ddpm")
    overwrite_output_dir: bool = _help("delete the results of an earlier run in output_dir and start again", False)
    logging_steps: int = _help("log (and check the loss is finite) every N steps", 50)
    checkpointing_steps: int = _help("save a checkpoint every N steps", 5000)
    checkpoints_total_limit: int | None = _help("keep at most this many checkpoints; none: all", 3)
    resume: str | None = _help('"latest" or a checkpoint folder to continue from', None)
    sample_steps: int = _help("save a sample grid from the EMA model every N steps", 10_000)
    num_sample_images: int = _help("images in each sample grid", 64)
    sample_inference_steps: int | None = _help("sampling steps for the grids; none: T", None)
    scheduler: str = _help(
        "the sampler of the grids and FIDs: ddpm, ddim, dpm-solver++, unipc, euler, euler-ancestral, heun, pndm or a "
        "diffusers scheduler class name; the saved pipeline keeps the run's DDPM scheduler",
        "ddpm",
    )
    eta: float | None = _help("DDIM's η for the grids and FIDs (0: deterministic); DDIM only", None)
    report_to: str = _help(f"Accelerate tracker: {', '.join(REPORT_TO)}", "tensorboard")
    # Evaluation during training (ddpm_hf.measures): FID of the EMA model against the training split
    fid_steps: int | None = _help("compute the FID of the EMA model every N steps and keep the best; none: never", None)
    fid_num_samples: int = _help("samples per FID", 5000)
    fid_inference_steps: int | None = _help("sampling steps for the FID (fewer than T: respaced); none: T", None)
    fid_batch_size: int = _help("images per sampling call, per process", 256)
    inception_weights: str | None = _help("the FID Inception file (default: looked for in the cache)", None)
    # Publishing (ddpm_hf.hub): the pipeline, its model card and sample grid, once training is done
    push_to_hub: bool = _help("push the trained pipeline to the Hub (the token: HF_TOKEN or `hf auth login`)", False)
    hub_repo_id: str | None = _help("the Hub repo to push to, user/name", None)
    hub_private: bool = _help("create the Hub repo private", False)
    preset: str | None = _help(
        "the preset the other values start from: quickstart, ddpm-cifar10 or ddpm-256 (default: quickstart)", None
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise a ValueError naming the first field whose value is not allowed."""
        for name in (
            "num_train_timesteps",
            "train_batch_size",
            "gradient_accumulation_steps",
            "max_train_steps",
            "logging_steps",
            "checkpointing_steps",
            "sample_steps",
            "num_sample_images",
            "fid_num_samples",
            "fid_batch_size",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        for name in (
            "resolution",
            "checkpoints_total_limit",
            "sample_inference_steps",
            "fid_steps",
            "fid_inference_steps",
        ):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or none, got {value!r}.")
        if self.lr_warmup_steps < 0:
            raise ValueError(f"lr_warmup_steps must be ≥ 0, got {self.lr_warmup_steps}.")
        if self.train_batch_size % self.gradient_accumulation_steps:
            raise ValueError(
                f"train_batch_size={self.train_batch_size} is not divisible by "
                f"gradient_accumulation_steps={self.gradient_accumulation_steps}."
            )
        for name, allowed in (
            ("beta_schedule", BETA_SCHEDULES),
            ("prediction_type", PREDICTION_TYPES),
            ("variance_type", VARIANCE_TYPES),
            ("loss_type", LOSS_TYPES),
            ("lr_schedule", LR_SCHEDULES),
            ("mixed_precision", MIXED_PRECISION),
            ("report_to", REPORT_TO),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}.")
        if self.preset is not None and self.preset not in TRAINING_PRESETS:
            raise ValueError(f"preset must be one of {sorted(TRAINING_PRESETS)}, got {self.preset!r}.")
        self.unet_kwargs()  # the network's own settings, and the resolution against its downsampling
        for name, kind in typing.get_type_hints(TrainingConfig).items():
            value = getattr(self, name)
            if float in (kind, *typing.get_args(kind)) and value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}.")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}.")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive or none, got {self.max_grad_norm}.")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}.")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}.")
        if self.push_to_hub and not self.hub_repo_id:
            raise ValueError("push_to_hub needs hub_repo_id (--hub-repo-id user/name).")
        for name in ("sample_inference_steps", "fid_inference_steps"):
            value = getattr(self, name)
            if value is not None and value > self.num_train_timesteps:
                raise ValueError(f"{name}={value} exceeds num_train_timesteps={self.num_train_timesteps}.")
        scheduler_from_name(self.scheduler, {"num_train_timesteps": self.num_train_timesteps}, self.eta)  # and η
        if self.fid_steps is not None and self.fid_num_samples < 2:
            raise ValueError(f"fid_num_samples must be ≥ 2 (a covariance), got {self.fid_num_samples}.")

    def unet_kwargs(self) -> dict[str, Any]:
        """The `UNet2DModel` arguments of `unet` (a preset or a config.json) with this run's overrides, checked.

        Raises:
            ValueError: `unet` is neither a preset nor a UNet2DModel config file, or the image size does not suit it.
        """
        if self.unet in UNET_PRESETS:
            kwargs = unet_config(self.unet)
        elif Path(self.unet).is_file():
            kwargs = load_unet_config(self.unet)
        else:
            raise ValueError(f"unet {self.unet!r} is neither a UNet preset ({sorted(UNET_PRESETS)}) nor a file.")
        if self.resolution is not None:
            kwargs["sample_size"] = self.resolution
        if self.dropout is not None:
            kwargs["dropout"] = self.dropout
        if self.variance_type in ("learned", "learned_range"):  # the network also outputs the variance
            kwargs["out_channels"] = 2 * kwargs.get("in_channels", 3)
        check_unet_config(kwargs, repr(self.unet))
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


TRAINING_PRESETS: dict[str, dict[str, Any]] = {
    # Trains on the built-in shapes on a 2-core CPU in a few minutes: `ddpm-hf train` with no options.
    "quickstart": {
        "unet": "ddpm-small",
        "resolution": 16,
        "train_batch_size": 64,
        "max_train_steps": 1200,
        "learning_rate": 1e-3,
        "lr_warmup_steps": 100,
        "ema_decay": 0.995,
        "ema_warmup": True,
        "random_flip": False,
        "logging_steps": 25,
        "checkpointing_steps": 500,
        "sample_steps": 500,
        "num_sample_images": 16,
        "output_dir": "outputs/quickstart",
    },
    # The paper's CIFAR-10 run (Ho et al. 2020, Appendix B).
    "ddpm-cifar10": {
        "dataset": "uoft-cs/cifar10",
        "unet": "ddpm-cifar10",
        "train_batch_size": 128,
        "max_train_steps": 800_000,
        "learning_rate": 2e-4,
        "lr_warmup_steps": 5000,
        "max_grad_norm": 1.0,
        "random_flip": True,
        "ema_decay": 0.9999,
        "output_dir": "outputs/ddpm-cifar10",
    },
    # The paper's 256×256 runs (CelebA-HQ, LSUN): batch 64, learning rate 2e-5, no dropout.
    "ddpm-256": {
        "unet": "ddpm-256",
        "train_batch_size": 64,
        "max_train_steps": 500_000,
        "learning_rate": 2e-5,
        "lr_warmup_steps": 5000,
        "max_grad_norm": 1.0,
        "random_flip": True,
        "ema_decay": 0.9999,
        "sample_steps": 20_000,
        "num_sample_images": 16,
        "output_dir": "outputs/ddpm-256",
    },
}

_FIELDS = {f.name: f for f in dataclasses.fields(TrainingConfig)}


def _field_type(name: str) -> Any:
    hint = typing.get_type_hints(TrainingConfig)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _parse_value(name: str, text: str) -> Any:
    """Turn a command-line string into the field's type; "none" gives None for optional fields."""
    kind = _field_type(name)
    optional = type(None) in typing.get_args(typing.get_type_hints(TrainingConfig)[name])
    if optional and text.lower() in ("none", "null", "auto"):
        return None
    if kind is bool:
        if text.lower() in ("true", "yes", "1", "on"):
            return True
        if text.lower() in ("false", "no", "0", "off"):
            return False
        raise argparse.ArgumentTypeError(f"--{name.replace('_', '-')}: {text!r} is not a bool")
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--{name.replace('_', '-')}: {text!r} is not a {kind.__name__}") from None


PARSER_DESCRIPTION = """Train a DDPM (Ho et al. 2020) with Hugging Face Accelerate.

Values come from a preset, then a --config file, then these options. The preset is --preset (or `preset:` in the
file), else quickstart. quickstart: ddpm-small on the built-in shapes at 16 px, 1,200 steps of batch 64, into
outputs/quickstart (a few minutes on a CPU). ddpm-cifar10: the paper's CIFAR-10 recipe (ddpm-cifar10 network,
batch 128, 800k steps, learning rate 2e-4), into outputs/ddpm-cifar10. ddpm-256: the paper's 256-px recipe
(ddpm-256 network, batch 64, learning rate 2e-5), into outputs/ddpm-256. The defaults shown below are quickstart's."""


def _shown_default(name: str) -> str:
    """The value an option takes when neither it nor the file sets it and no preset is named: quickstart's."""
    value = TRAINING_PRESETS["quickstart"].get(name, _FIELDS[name].default)
    if value is None:
        return "auto" if _field_type(name) is bool else "none"
    return str(value)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The command-line options of `ddpm-hf train`: `--config`, and one option per `TrainingConfig` field."""
    parser = parser or argparse.ArgumentParser(prog="ddpm-hf train")
    parser.description = PARSER_DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--config", type=Path, default=None, help="a YAML or JSON file of TrainingConfig fields")
    for name, spec in _FIELDS.items():
        flag = f"--{name.replace('_', '-')}"
        help_text = spec.metadata["help"]
        if "default" not in help_text:
            help_text += f" (default: {_shown_default(name)})"
        if _field_type(name) is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(
                flag,
                type=lambda text, name=name: _parse_value(name, text),
                default=argparse.SUPPRESS,
                metavar=_field_type(name).__name__.upper(),
                help=help_text,
            )
    return parser


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML (.yaml, .yml) or JSON file of `TrainingConfig` fields.

    Raises:
        ValueError: the file is missing, unreadable, not a mapping, or names an unknown field.
    """
    if not path.is_file():
        raise ValueError(f"Config file {path} does not exist.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"Config file {path} is not UTF-8 text ({error.reason} at byte {error.start}).") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text)
        else:
            values = json.loads(text)
    except Exception as error:
        raise ValueError(f"Config file {path} cannot be parsed: {error}") from error
    if not isinstance(values, dict):
        raise ValueError(f"Config file {path} must hold a mapping of option names to values.")
    keys = [key for key in values if not isinstance(key, str)]
    if keys:
        raise ValueError(f"Config file {path}: option names must be strings, got {keys[0]!r}.")
    values = {key.replace("-", "_"): value for key, value in values.items()}
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise ValueError(f"Config file {path} has unknown option(s) {unknown}.")
    return {name: _coerce(name, value, path) for name, value in values.items()}


def _coerce(name: str, value: Any, path: Path) -> Any:
    """Give a file's value the field's type: YAML reads `1e-4` as a string and `2` as an int for a float field."""
    kind = _field_type(name)
    if value is None or isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and kind is not str:
        try:
            return _parse_value(name, value)
        except argparse.ArgumentTypeError:
            pass
    raise ValueError(f"Config file {path}: {name} must be a {kind.__name__}, got {value!r}.")


def parse_training_config(
    argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None
) -> TrainingConfig:
    """Build the `TrainingConfig` of a command line (see the module docstring for the precedence)."""
    arguments = vars(build_parser(parser).parse_args(argv))
    config_path = arguments.pop("config", None)
    from_file = load_config_file(config_path) if config_path is not None else {}
    preset = arguments.get("preset", from_file.get("preset")) or "quickstart"
    if preset not in TRAINING_PRESETS:
        raise ValueError(f"preset must be one of {sorted(TRAINING_PRESETS)}, got {preset!r}.")
    values = {**TRAINING_PRESETS[preset], **from_file, **arguments, "preset": preset}
    return TrainingConfig(**values)
