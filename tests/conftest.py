"""Fixtures shared by the test modules: small, seeded DDPM components that run in milliseconds on a CPU."""

from __future__ import annotations

import os
import shutil
import tempfile

from processes import free_port

# No test may reach the network: the Hub clients read these when they are first imported, below. The Hub tests
# (test_hub.py) talk to their own server on loopback: the client's endpoint is that server's address, and those tests
# alone switch the client online (`huggingface_hub.constants.HF_HUB_OFFLINE`) or start processes without the flag.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"
os.environ["HF_HUB_DISABLE_XET"] = "1"  # plain HTTP and LFS, which the test server speaks
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.pop("HUGGINGFACE_CO_STAGING", None)
os.environ.pop("HF_TOKEN", None)
os.environ.pop("HUGGING_FACE_HUB_TOKEN", None)
os.environ.pop("HF_TOKEN_PATH", None)
os.environ.pop("HF_OIDC_RESOURCE", None)
os.environ.pop("HF_HUB_CACHE", None)
os.environ.pop("HUGGINGFACE_HUB_CACHE", None)
# A fresh HF_HOME: no saved token, Hub cache or client state of the user's is read or written. The datasets cache
# and ddpm_hf's Inception cache stay where they were, so that tests find what earlier runs prepared there.
os.environ.setdefault(
    "HF_DATASETS_CACHE", os.path.expanduser(os.path.join(os.environ.get("HF_HOME", "~/.cache/huggingface"), "datasets"))
)
os.environ.setdefault(
    "DDPM_HF_CACHE", os.path.expanduser(os.path.join(os.environ.get("HF_HOME", "~/.cache/huggingface"), "ddpm_hf"))
)
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="ddpm-hf-tests-hf-home-")

import pytest
import torch
from diffusers import UNet2DModel

from ddpm_hf import DDPMPipeline, DDPMScheduler, create_unet

TEST_HF_HOME = os.environ["HF_HOME"]


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the session's HF_HOME."""
    shutil.rmtree(TEST_HF_HOME, ignore_errors=True)


@pytest.fixture
def tiny_unet() -> UNet2DModel:
    """A freshly initialised `ddpm-tiny` UNet (16×16, every kind of block), with the same weights in every test."""
    torch.manual_seed(0)
    return create_unet("ddpm-tiny")


@pytest.fixture
def pipeline(tiny_unet) -> DDPMPipeline:
    """`tiny_unet` with a DDPM scheduler of T = 10 steps, its progress bar off: a whole chain in milliseconds."""
    pipe = DDPMPipeline(unet=tiny_unet, scheduler=DDPMScheduler(num_train_timesteps=10))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module whose tensors are tiny: more threads only add synchronisation, which makes such
    tests several times slower on a busy 2-core machine. Use with `pytestmark = pytest.mark.usefixtures(...)`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
