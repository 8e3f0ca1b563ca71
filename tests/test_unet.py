"""Specification of the paper's UNet presets (`ddpm_hf.unet_config`, `ddpm_hf.create_unet`)."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import UNet2DModel

from ddpm_hf import PRESETS, create_unet, unet_config

# The config of the converted original checkpoint `google/ddpm-cifar10-32` as published on the Hub.
GOOGLE_DDPM_CIFAR10_32 = {
    "act_fn": "silu",
    "attention_head_dim": None,
    "block_out_channels": [128, 256, 256, 256],
    "center_input_sample": False,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "in_channels": 3,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 32,
    "time_embedding_type": "positional",
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
}
# ... and of `google/ddpm-celebahq-256` (the church, bedroom and cat models share it).
GOOGLE_DDPM_256 = {
    **GOOGLE_DDPM_CIFAR10_32,
    "block_out_channels": [128, 128, 256, 256, 512, 512],
    "down_block_types": ["DownBlock2D"] * 4 + ["AttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "AttnUpBlock2D"] + ["UpBlock2D"] * 4,
    "sample_size": 256,
}


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


@pytest.mark.parametrize("name, expected", [("ddpm-cifar10", 35_746_307), ("ddpm-256", 113_673_219)])
def test_paper_networks_have_the_papers_parameter_counts(name, expected):
    with torch.device("meta"):
        assert count_parameters(create_unet(name)) == expected


@pytest.mark.parametrize("name, google", [("ddpm-cifar10", GOOGLE_DDPM_CIFAR10_32), ("ddpm-256", GOOGLE_DDPM_256)])
def test_state_dict_keys_and_shapes_equal_the_converted_google_checkpoint(name, google):
    with torch.device("meta"):
        assert shapes(create_unet(name)) == shapes(UNet2DModel(**google))


def test_cifar10_preset_is_the_papers_configuration():
    config = unet_config("ddpm-cifar10")
    assert config["dropout"] == 0.1
    assert config["attention_head_dim"] is None
    assert (config["freq_shift"], config["flip_sin_to_cos"]) == (1, False)
    assert (config["downsample_padding"], config["norm_eps"], config["norm_num_groups"]) == (0, 1e-6, 32)
    assert unet_config("ddpm-256")["dropout"] == 0.0


def test_attention_is_single_headed_over_all_channels():
    unet = create_unet("ddpm-tiny")
    attentions = [m for m in unet.modules() if type(m).__name__ == "Attention"]
    assert attentions and all(a.heads == 1 for a in attentions)


def test_diffusers_default_of_eight_heads_computes_something_else_with_the_same_weights():
    torch.manual_seed(0)
    single = create_unet("ddpm-tiny")
    multi = create_unet("ddpm-tiny", attention_head_dim=8)
    multi.load_state_dict(single.state_dict())
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([10])
    with torch.no_grad():
        assert not torch.allclose(single(x, t).sample, multi(x, t).sample, atol=1e-4)


def test_timestep_embedding_is_ddpms_own_sinusoid():
    """The reference code: emb = exp(−log(10000) · i / (half − 1)), [sin(t·emb), cos(t·emb)]."""
    unet = create_unet("ddpm-tiny")
    dim = unet.config.block_out_channels[0]
    half = dim // 2
    t = torch.tensor([0, 1, 17, 999])
    frequencies = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000.0) / (half - 1)))
    expected = torch.cat([torch.sin(t[:, None] * frequencies), torch.cos(t[:, None] * frequencies)], dim=1)
    torch.testing.assert_close(unet.time_proj(t), expected)


def test_small_presets_run_forward_at_their_resolution():
    for name in ("ddpm-tiny", "ddpm-small"):
        unet = create_unet(name)
        size = unet.config.sample_size
        out = unet(torch.randn(2, 3, size, size), torch.tensor([3, 7])).sample
        assert out.shape == (2, 3, size, size)
        assert count_parameters(unet) < 2_000_000


def test_overrides_replace_preset_values_without_changing_the_preset():
    config = unet_config("ddpm-cifar10", sample_size=64, dropout=0.0)
    assert (config["sample_size"], config["dropout"]) == (64, 0.0)
    assert PRESETS["ddpm-cifar10"]["sample_size"] == 32


def test_unknown_preset_and_unknown_override_fail_clearly():
    with pytest.raises(ValueError, match="ddpm-cifar100"):
        unet_config("ddpm-cifar100")
    with pytest.raises(ValueError, match="num_layers"):
        create_unet("ddpm-tiny", num_layers=3)
