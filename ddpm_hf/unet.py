"""The DDPM paper's noise-prediction networks as `diffusers.UNet2DModel` configurations.

Ho et al. 2020, Appendix B: "Our neural network architecture follows the backbone of PixelCNN++, which is a U-Net
based on a Wide ResNet. We replaced weight normalization with group normalization [...]. Our 32 × 32 models use four
feature map resolutions (32 × 32 to 4 × 4), and our 256 × 256 models use six. All models have two convolutional
residual blocks per resolution level and self-attention blocks at the 16 × 16 resolution between the convolutional
blocks. Diffusion time t is specified by adding the Transformer sinusoidal position embedding into each residual
block. [...] Our CIFAR10 model has 35.7 million parameters, and our LSUN and CelebA-HQ models have 114 million
parameters." Dropout is 0.1 on CIFAR-10 and 0 elsewhere.

The presets reproduce the converted original checkpoints on the Hub (`google/ddpm-cifar10-32` and
`google/ddpm-{celebahq,church,bedroom,cat}-256`) key for key, and compute what the original TensorFlow code computed:

* single-head self-attention over all channels (`attention_head_dim=None`; diffusers' default of 8 heads loads the
  same weights but computes a different function);
* DDPM's own sinusoidal timestep embedding, `[sin, cos]` with frequencies `exp(-log(10000) * i / (half - 1))`
  (`flip_sin_to_cos=False`, `freq_shift=1`);
* strided 3×3 downsampling convolutions without symmetric padding (`downsample_padding=0`), and GroupNorm with
  32 groups and eps 1e-6.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from diffusers import UNet2DModel

__all__ = ["PRESETS", "unet_config", "create_unet", "load_unet_config", "check_unet_config"]

# What every DDPM network shares, whatever its size (see the module docstring).
_DDPM_COMMON: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "center_input_sample": False,
    "time_embedding_type": "positional",
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "downsample_padding": 0,
    "act_fn": "silu",
    "attention_head_dim": None,
    "norm_num_groups": 32,
    "norm_eps": 1e-6,
}

PRESETS: dict[str, dict[str, Any]] = {
    # The paper's CIFAR-10 model: ch=128, ch_mult=(1, 2, 2, 2), attention at 16×16, dropout 0.1.
    # 35,746,307 parameters; the layout of `google/ddpm-cifar10-32`.
    "ddpm-cifar10": {
        **_DDPM_COMMON,
        "sample_size": 32,
        "block_out_channels": (128, 256, 256, 256),
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        "dropout": 0.1,
    },
    # The paper's 256×256 model (CelebA-HQ, LSUN): ch=128, ch_mult=(1, 1, 2, 2, 4, 4), attention at 16×16.
    # 113,673,219 parameters; the layout of `google/ddpm-{celebahq,church,bedroom,cat}-256`.
    "ddpm-256": {
        **_DDPM_COMMON,
        "sample_size": 256,
        "block_out_channels": (128, 128, 256, 256, 512, 512),
        "down_block_types": (
            "DownBlock2D",
            "DownBlock2D",
            "DownBlock2D",
            "DownBlock2D",
            "AttnDownBlock2D",
            "DownBlock2D",
        ),
        "up_block_types": ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
        "dropout": 0.0,
    },
    # The CIFAR-10 architecture scaled down for the CPU quickstart (32×32, about 2.3M parameters).
    "ddpm-small": {
        **_DDPM_COMMON,
        "sample_size": 32,
        "block_out_channels": (32, 64, 64),
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "dropout": 0.0,
    },
    # The smallest network that still has every kind of block, for unit tests (16×16, about 70k parameters).
    "ddpm-tiny": {
        **_DDPM_COMMON,
        "sample_size": 16,
        "block_out_channels": (16, 32),
        "down_block_types": ("AttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "AttnUpBlock2D"),
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "dropout": 0.0,
    },
}


def _unet_defaults() -> dict[str, Any]:
    """`UNet2DModel.__init__`'s arguments and their defaults."""
    parameters = inspect.signature(UNet2DModel.__init__).parameters
    return {name: p.default for name, p in parameters.items() if name != "self"}


def _unet_parameters() -> set[str]:
    return set(_unet_defaults())


def unet_config(name: str, **overrides: Any) -> dict[str, Any]:
    """Return the `UNet2DModel` keyword arguments of preset `name`, with `overrides` applied.

    Args:
        name: one of `PRESETS` (`"ddpm-cifar10"`, `"ddpm-256"`, `"ddpm-small"`, `"ddpm-tiny"`).
        **overrides: any `UNet2DModel.__init__` argument, for example `sample_size=64` or `dropout=0.0`.

    Raises:
        ValueError: for an unknown preset or an override that `UNet2DModel` does not take.
    """
    if name not in PRESETS:
        raise ValueError(f"Unknown UNet preset {name!r}; choose one of {sorted(PRESETS)}.")
    unknown = sorted(set(overrides) - _unet_parameters())
    if unknown:
        raise ValueError(f"Unknown UNet2DModel argument(s) {unknown} in the overrides of preset {name!r}.")
    config = dict(PRESETS[name])
    config.update(overrides)
    return config


def create_unet(name: str, **overrides: Any) -> UNet2DModel:
    """Build a freshly initialised `diffusers.UNet2DModel` from preset `name` (see `unet_config`)."""
    return UNet2DModel(**unet_config(name, **overrides))


def load_unet_config(path: str | Path) -> dict[str, Any]:
    """The `UNet2DModel` keyword arguments of a `config.json` (as `save_config` writes it), checked.

    Raises:
        ValueError: the file is unreadable, is not JSON, is not a `UNet2DModel` config, or takes unknown arguments
            (each named with the file).
    """
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"UNet config {path} cannot be read as JSON: {error}.") from None
    if not isinstance(values, dict):
        raise ValueError(f"UNet config {path} must hold a JSON object, not a {type(values).__name__}.")
    class_name = values.get("_class_name", "UNet2DModel")
    if class_name != "UNet2DModel":
        raise ValueError(f"UNet config {path} is a {class_name} config; a UNet2DModel config is needed.")
    kwargs = {key: value for key, value in values.items() if not key.startswith("_")}
    unknown = sorted(set(kwargs) - _unet_parameters())
    if unknown:
        raise ValueError(f"UNet config {path} has argument(s) UNet2DModel does not take: {unknown}.")
    return kwargs


def check_unet_config(kwargs: dict[str, Any], source: str) -> None:
    """Check what `UNet2DModel(**kwargs)` would only find out in its first forward pass: an image size that its
    downsampling stages cannot halve evenly, and block lists of different lengths.

    Raises:
        ValueError: naming `source` (the preset or file) and the setting.
    """
    settings = {**_unet_defaults(), **kwargs}
    down, up, channels = settings["down_block_types"], settings["up_block_types"], settings["block_out_channels"]
    if not len(down) == len(up) == len(channels):
        raise ValueError(
            f"UNet {source}: down_block_types, up_block_types and block_out_channels must have one entry per "
            f"resolution, got {len(down)}, {len(up)} and {len(channels)}."
        )
    size, factor = settings["sample_size"], 2 ** (len(down) - 1)
    sizes = size if isinstance(size, (list, tuple)) else (size, size)
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 or s % factor for s in sizes):
        raise ValueError(
            f"UNet {source}: the image size {size} must be a positive multiple of {factor}, since its {len(down) - 1} "
            "downsampling stages halve it each (--resolution)."
        )
