"""Measuring a pipeline and a dataset with the work spread over the processes of a launch: the FID reference
statistics of a dataset split (cached), the Inception features of a pipeline's samples, and the variational bound
(eq. 5 of Ho et al. 2020) of every image of a dataset in bits/dim.

The library parts of `ddpm-hf evaluate` (`ddpm_hf.evaluate`, the command) that training's FID also needs. Each
process handles the indices i ≡ rank (mod P), and every random draw is tied to the index, so the numbers do not depend
on P or on the batch size.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from .data import SplitRows, check_channels, split_rows, to_model_input
from .inception import INCEPTION_SHA256, default_cache_dir, inception_features
from .metrics import VariationalBound, feature_statistics, variational_bound
from .pipeline import DDPMPipeline
from .sampling import draw_samples, generate_samples, load_samples
from .scheduler import DDPMScheduler
from .seeding import Stream, stream_seed

__all__ = ["ReferenceStatistics", "reference_statistics", "sample_features", "dataset_bits_per_dim", "say"]

_PREPROCESSING = "uint8, bilinear resize to 299 (align_corners=False), 2x/255-1"  # part of the reference key


# ---- Spreading work over processes ----------------------------------------------------------------------------------


def say(accelerator: Accelerator, message: str) -> None:
    """A line on stderr from the main process, between progress bars."""
    if accelerator.is_main_process:
        tqdm.write(message, file=sys.stderr)


def _my_indices(num_items: int, accelerator: Accelerator) -> list[int]:
    """The indices i ≡ rank (mod P) of this process."""
    return list(range(accelerator.process_index, num_items, accelerator.num_processes))


def _gather_in_order(rows: torch.Tensor, num_items: int, accelerator: Accelerator) -> torch.Tensor:
    """The rows of every process (process r holds items r, r + P, r + 2P, …) as one tensor of all `num_items` rows in
    index order, on every process, on the CPU."""
    P = accelerator.num_processes
    if P == 1:
        return rows.cpu()
    per_process = -(-num_items // P)
    padded = torch.zeros((per_process, *rows.shape[1:]), dtype=rows.dtype, device=accelerator.device)
    padded[: len(rows)] = rows.to(accelerator.device)
    gathered = accelerator.gather(padded).view(P, per_process, *rows.shape[1:])  # [r, j] is item r + jP
    return gathered.transpose(0, 1).reshape(P * per_process, *rows.shape[1:])[:num_items].cpu()


def _features_of(
    model: torch.nn.Module,
    num_items: int,
    load: Callable[[list[int]], torch.Tensor],
    accelerator: Accelerator,
    batch_size: int,
    description: str,
) -> np.ndarray:
    """Inception features of items 0 … num_items − 1 (uint8 images `load(indices)`), spread over the processes."""
    mine = _my_indices(num_items, accelerator)
    parts = []
    progress = tqdm(total=len(mine), desc=description, unit="img", disable=not accelerator.is_main_process)
    for start in range(0, len(mine), batch_size):
        indices = mine[start : start + batch_size]
        parts.append(torch.from_numpy(inception_features(model, load(indices), batch_size)).float())
        progress.update(len(indices))
    progress.close()
    rows = torch.cat(parts) if parts else torch.zeros(0, 2048)
    return _gather_in_order(rows, num_items, accelerator).double().numpy()


# ---- FID reference statistics ---------------------------------------------------------------------------------------


@dataclass
class ReferenceStatistics:
    """The mean and covariance of the reference images' Inception features, and the `.npz` they are cached in."""

    mu: np.ndarray
    sigma: np.ndarray
    num_images: int
    path: Path
    key: dict[str, Any]


def _reference_key(
    rows: SplitRows, split: str, resolution: int, channels: int, image_column: str | None, num_images: int | None
) -> dict[str, Any]:
    return {
        "dataset": rows.source,
        "fingerprint": rows.fingerprint,  # changes with the images
        "split": split,
        "resolution": resolution,
        "channels": channels,
        "image_column": image_column,
        "num_images": num_images,
        "center_crop": True,
        "preprocessing": _PREPROCESSING,
        "extractor_sha256": INCEPTION_SHA256,
    }


def reference_statistics(
    dataset: str | None,
    split: str,
    resolution: int,
    channels: int,
    inception: torch.nn.Module,
    accelerator: Accelerator | None = None,
    image_column: str | None = None,
    num_images: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 250,
) -> ReferenceStatistics:
    """The FID reference statistics of a dataset split (the first `num_images` images, default all), prepared as for
    training (resized, centre-cropped, `channels` channels) — read from the cache when they were computed before,
    else computed (spread over the processes) and cached in `cache_dir/fid_reference/`.

    The file is named by dataset, split and resolution plus a hash of the whole key (also stored in the file): the
    dataset and its fingerprint (which changes with its content; see `ddpm_hf.data.SplitRows`), split, resolution,
    channels, image column, number of images, preprocessing and the extractor's SHA-256.
    """
    accelerator = accelerator or Accelerator()
    check_channels(channels)
    rows = split_rows(dataset, split, image_column, resolution, num_images)  # listed, nothing decoded yet
    key = _reference_key(rows, split, resolution, channels, image_column, num_images)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(key["dataset"]).name or key["dataset"]).strip("_")
    path = Path(cache_dir or default_cache_dir()) / "fid_reference" / f"{slug}-{split}-{resolution}px-{digest}.npz"
    if path.is_file():
        with np.load(path) as cached:
            if json.loads(str(cached["key"])) == key:
                say(accelerator, f"FID reference statistics: reusing {path}")
                return ReferenceStatistics(cached["mu"], cached["sigma"], int(cached["num_images"]), path, key)
    say(accelerator, f"FID reference statistics of the {split} split: computing them, to be cached in {path}")
    # Each process decodes only the rows of its own batches: memory O(batch) and the decoding spread over P processes
    features = _features_of(
        inception,
        rows.count,
        lambda indices: rows.decode(indices, resolution, channels),
        accelerator,
        batch_size,
        f"Inception features of the {split} split",
    )
    mu, sigma = feature_statistics(features)
    if accelerator.is_main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.stem}.tmp.npz")
        np.savez(temporary, mu=mu, sigma=sigma, num_images=rows.count, key=json.dumps(key, sort_keys=True))
        os.replace(temporary, path)
        say(accelerator, f"FID reference statistics cached in {path}")
    accelerator.wait_for_everyone()
    return ReferenceStatistics(mu, sigma, rows.count, path, key)


# ---- Samples ---------------------------------------------------------------------------------------------------------


def sample_features(
    pipeline: DDPMPipeline,
    inception: torch.nn.Module,
    num_samples: int,
    accelerator: Accelerator | None = None,
    samples_dir: str | os.PathLike | None = None,
    seed: int = 0,
    batch_size: int = 256,
    num_inference_steps: int | None = None,
    respace: bool = False,
    eta: float | None = None,
) -> np.ndarray:
    """The Inception features (N, 2048) of N samples of `pipeline`, drawn with index-tied seeds over the processes.

    With `samples_dir` the samples are PNG files there (`ddpm_hf.sampling.generate_samples`: those already on disk
    are not drawn again, and a folder of samples drawn by another pipeline or with other settings is refused with a
    ValueError before anything is drawn); without it they stay in memory (as during training).
    """
    accelerator = accelerator or Accelerator()
    if samples_dir is not None:
        generate_samples(
            pipeline, num_samples, samples_dir, seed, batch_size, num_inference_steps, respace, eta,
            accelerator.process_index, accelerator.num_processes, show_progress=accelerator.is_main_process,
        )  # fmt: skip
        accelerator.wait_for_everyone()

        def load(indices: list[int]) -> torch.Tensor:
            return torch.from_numpy(load_samples(samples_dir, indices, pipeline.image_shape)).permute(0, 3, 1, 2)

    else:

        def load(indices: list[int]) -> torch.Tensor:
            batches = draw_samples(pipeline, indices, seed, batch_size, num_inference_steps, respace, eta)
            return torch.from_numpy(np.concatenate([images for _, images in batches])).permute(0, 3, 1, 2)

    return _features_of(inception, num_samples, load, accelerator, batch_size, "Inception features of the samples")


# ---- Bits per dimension ---------------------------------------------------------------------------------------------


def dataset_bits_per_dim(
    unet: Callable,
    scheduler: DDPMScheduler,
    images: torch.Tensor,
    accelerator: Accelerator | None = None,
    seed: int = 0,
    batch_size: int = 64,
) -> VariationalBound:
    """The variational bound (eq. 5) of every image of a dataset, in bits/dim, spread over the processes.

    Args:
        images: uint8 (N, C, H, W), as `ddpm_hf.data.load_training_images` decodes them.
        seed: the noise of image i's x_t comes from a generator seeded by (seed, i): the result does not depend on
            the number of processes or the batch size.

    Returns:
        The terms of all N images, in index order, on the CPU, on every process.
    """
    accelerator = accelerator or Accelerator()
    mine = _my_indices(len(images), accelerator)
    device = accelerator.device
    rows = []
    progress = tqdm(total=len(mine), desc="Bits/dim (variational bound)", unit="img",
                    disable=not accelerator.is_main_process)  # fmt: skip
    for start in range(0, len(mine), batch_size):
        indices = mine[start : start + batch_size]
        x_0 = to_model_input(images[indices].to(device))
        generators = [torch.Generator(device).manual_seed(stream_seed(seed, Stream.LIKELIHOOD, i)) for i in indices]
        bound = variational_bound(unet, scheduler, x_0, generator=generators)
        rows.append(torch.stack([bound.prior, bound.kl, bound.decoder], dim=1))
        progress.update(len(indices))
    progress.close()
    local = torch.cat(rows) if rows else torch.zeros(0, 3, dtype=torch.float64, device=device)
    prior, kl, decoder = _gather_in_order(local, len(images), accelerator).unbind(dim=1)
    return VariationalBound(total=prior + kl + decoder, prior=prior, kl=kl, decoder=decoder)
