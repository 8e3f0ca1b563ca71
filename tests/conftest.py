"""Fixtures shared by the test modules: small, seeded DDPM components that run in milliseconds on a CPU."""

from __future__ import annotations

import os

# No test may reach the network: the Hub clients read these when they are first imported, below.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.pop("HUGGINGFACE_CO_STAGING", None)

import pytest
import torch
from diffusers import UNet2DModel

from ddpm_hf import create_unet


@pytest.fixture
def tiny_unet() -> UNet2DModel:
    """A freshly initialised `ddpm-tiny` UNet (16×16, every kind of block), with the same weights in every test."""
    torch.manual_seed(0)
    return create_unet("ddpm-tiny")
