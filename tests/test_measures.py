"""Specification of `ddpm_hf.measures`: FID reference statistics computed once and cached under their key, the
Inception features of a pipeline's samples (from memory or PNG files, never another pipeline's), and the bound of a
dataset in bits/dim with noise tied to the image index."""

from __future__ import annotations

import io
import json
import os

import datasets
import numpy as np
import PIL.Image
import pytest
import torch
from feature_networks import MustNotRun, PooledFeatures

from ddpm_hf import DDPMPipeline, DDPMScheduler
from ddpm_hf.data import load_training_images, to_model_input
from ddpm_hf.inception import INCEPTION_SHA256, inception_features
from ddpm_hf.measures import dataset_bits_per_dim, reference_statistics, sample_features
from ddpm_hf.metrics import feature_statistics, variational_bound
from ddpm_hf.sampling import MANIFEST_NAME, load_samples
from ddpm_hf.seeding import stream_seed

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def png_bytes(image: PIL.Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def shapes(split: str, resolution: int = 16) -> torch.Tensor:
    return load_training_images("builtin:shapes", split, None, resolution, 3, show_progress=False).images


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path, monkeypatch):
    """No test reads or writes the user's caches."""
    monkeypatch.setenv("DDPM_HF_CACHE", str(tmp_path / "default-cache"))
    monkeypatch.chdir(tmp_path)


def test_reference_statistics_are_computed_once_and_cached_under_their_key(tmp_path):
    cache, network = tmp_path / "cache", PooledFeatures()
    first = reference_statistics("builtin:shapes", "train", 16, 3, network, num_images=5, cache_dir=cache, batch_size=2)
    expected_mu, expected_sigma = feature_statistics(inception_features(network, shapes("train")[:5], batch_size=2))
    np.testing.assert_array_equal(first.mu, expected_mu)  # the first 5 training images, prepared as for training
    np.testing.assert_array_equal(first.sigma, expected_sigma)
    assert first.num_images == 5 and first.path.is_file() and first.path.parent == cache / "fid_reference"
    with np.load(first.path) as stored:
        assert json.loads(str(stored["key"])) == first.key
        assert np.array_equal(stored["mu"], first.mu) and np.array_equal(stored["sigma"], first.sigma)
    assert first.key["split"] == "train" and first.key["resolution"] == 16 and first.key["num_images"] == 5
    assert first.key["extractor_sha256"] == INCEPTION_SHA256

    again = reference_statistics("builtin:shapes", "train", 16, 3, MustNotRun(), num_images=5, cache_dir=cache)
    assert again.path == first.path and again.num_images == 5
    assert np.array_equal(again.mu, first.mu) and np.array_equal(again.sigma, first.sigma)

    others = [
        reference_statistics("builtin:shapes", "test", 16, 3, network, num_images=5, cache_dir=cache),
        reference_statistics("builtin:shapes", "train", 8, 3, network, num_images=5, cache_dir=cache),
        reference_statistics("builtin:shapes", "train", 16, 3, network, num_images=4, cache_dir=cache),
    ]
    assert len({first.path, *(other.path for other in others)}) == 4
    assert all(other.path.is_file() and not np.array_equal(other.mu, first.mu) for other in others)
    assert others[2].num_images == 4

    # a file under the right name whose stored key differs is not trusted: the statistics are computed again
    with np.load(first.path) as stored:
        np.savez(first.path, mu=stored["mu"], sigma=stored["sigma"], num_images=5, key=json.dumps({"other": 1}))
    with pytest.raises(AssertionError, match="feature network ran"):
        reference_statistics("builtin:shapes", "train", 16, 3, MustNotRun(), num_images=5, cache_dir=cache)


def test_reference_statistics_decode_only_the_images_they_use(tmp_path):
    """`--reference-num-images 2` decodes two images, not the split: the third row here is not even an image."""
    rows = [{"bytes": png_bytes(PIL.Image.new("RGB", (16, 16), (40 * i, 0, 0))), "path": None} for i in range(2)]
    rows.append({"bytes": b"not an image", "path": None})
    dataset = datasets.Dataset.from_dict({"img": rows}).cast_column("img", datasets.Image())
    datasets.DatasetDict({"train": dataset}).save_to_disk(str(tmp_path / "data"))
    first_two = reference_statistics(str(tmp_path / "data"), "train", 16, 3, PooledFeatures(), num_images=2,
                                     cache_dir=tmp_path / "cache")  # fmt: skip
    assert first_two.num_images == 2
    with pytest.raises(ValueError, match="row 2"):
        reference_statistics(str(tmp_path / "data"), "train", 16, 3, PooledFeatures(), cache_dir=tmp_path / "cache")


def test_reference_statistics_of_a_changed_image_folder_are_computed_again(tmp_path):
    """The key holds the data set's fingerprint: after an image is replaced under the same name, the statistics are
    those of the new images, not the cached ones of the old."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(4):
        PIL.Image.new("RGB", (16, 16), (60 * i, 20, 200 - 40 * i)).save(folder / f"{i}.png")
    cache = tmp_path / "cache"
    before = reference_statistics(str(folder), "train", 16, 3, PooledFeatures(), cache_dir=cache)
    assert before.key["fingerprint"]
    PIL.Image.new("RGB", (16, 16), (255, 255, 255)).save(folder / "3.png")
    os.utime(folder / "3.png", ns=(1, 1))  # a changed time alone would do; the content differs too
    after = reference_statistics(str(folder), "train", 16, 3, PooledFeatures(), cache_dir=cache)
    assert after.path != before.path and not np.array_equal(after.mu, before.mu)
    images = load_training_images(str(folder), "train", None, 16, 3, show_progress=False).images
    np.testing.assert_array_equal(after.mu, feature_statistics(inception_features(PooledFeatures(), images, 4))[0])


def test_reference_statistics_say_which_cache_file_they_write_or_reuse(tmp_path, capsys):
    computed = reference_statistics("builtin:shapes", "train", 16, 3, PooledFeatures(), num_images=3,
                                    cache_dir=tmp_path / "cache")  # fmt: skip
    said = capsys.readouterr().err
    assert f"computing them, to be cached in {computed.path}" in said and f"cached in {computed.path}" in said
    reference_statistics("builtin:shapes", "train", 16, 3, MustNotRun(), num_images=3, cache_dir=tmp_path / "cache")
    assert f"FID reference statistics: reusing {computed.path}" in capsys.readouterr().err


def test_samples_of_another_pipeline_are_not_measured(pipeline, tiny_unet, tmp_path):
    """FID of pipeline B where pipeline A's samples lie: refused before a sample is drawn or a feature computed."""
    sample_features(pipeline, PooledFeatures(), 3, samples_dir=tmp_path / "samples", seed=3)
    with torch.no_grad():
        tiny_unet.conv_in.weight.add_(0.01)  # another model: the same network, other weights
    other = DDPMPipeline(unet=tiny_unet, scheduler=DDPMScheduler(num_train_timesteps=10))
    with pytest.raises(ValueError, match=r"samples holds samples drawn with other settings \(unet_sha256"):
        sample_features(other, MustNotRun(), 3, samples_dir=tmp_path / "samples", seed=3)


def test_dataset_bits_per_dim_is_the_variational_bound_with_index_tied_noise(tiny_unet):
    tiny_unet.eval()
    scheduler = DDPMScheduler(num_train_timesteps=10)
    images, seed = shapes("test")[:3], 5
    generators = [torch.Generator().manual_seed(stream_seed(seed, 4, i)) for i in range(3)]
    direct = variational_bound(tiny_unet, scheduler, to_model_input(images), generator=generators)
    one_by_one = dataset_bits_per_dim(tiny_unet, scheduler, images, seed=seed, batch_size=1)
    all_at_once = dataset_bits_per_dim(tiny_unet, scheduler, images, seed=seed, batch_size=3)
    for term in ("total", "prior", "kl", "decoder"):
        expected = getattr(direct, term)
        assert getattr(all_at_once, term).dtype == torch.float64 and getattr(all_at_once, term).shape == (3,)
        torch.testing.assert_close(getattr(all_at_once, term), expected, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(getattr(one_by_one, term), expected, rtol=1e-6, atol=1e-6)
    assert len(set(direct.total.tolist())) == 3  # three different images, three different bounds
    other_seed = dataset_bits_per_dim(tiny_unet, scheduler, images, seed=seed + 1, batch_size=3)
    assert not torch.allclose(other_seed.kl, direct.kl)  # the seed drives the noise


def test_sample_features_are_the_same_from_memory_and_from_png_files(pipeline, tmp_path):
    network = PooledFeatures()
    in_memory = sample_features(pipeline, network, 5, seed=3, batch_size=2)
    from_files = sample_features(pipeline, network, 5, samples_dir=tmp_path / "samples", seed=3, batch_size=2)
    assert in_memory.shape == (5, 2048) and in_memory.dtype == np.float64
    np.testing.assert_array_equal(in_memory, from_files)
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [f"{i:06d}.png" for i in range(5)] + [
        MANIFEST_NAME
    ]
    written = torch.from_numpy(load_samples(tmp_path / "samples", 5)).permute(0, 3, 1, 2)
    np.testing.assert_allclose(from_files, inception_features(network, written), rtol=1e-5, atol=1e-5)
    assert len({row.tobytes() for row in in_memory}) == 5
    other_seed = sample_features(pipeline, network, 5, seed=4, batch_size=5)
    assert not np.allclose(other_seed, in_memory)
