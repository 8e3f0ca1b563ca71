"""Training images: any image dataset `datasets` can load, decoded once into a uint8 tensor at the model's resolution.

Sources, by what `source` names:

* nothing (None) or `"builtin:shapes"`: the built-in dataset of coloured shapes (`ddpm_hf.shapes`), generated on the
  spot, no network;
* a folder written by `Dataset.save_to_disk`;
* a folder of image files (read with the `imagefolder` builder);
* any other folder or a Hub name (`uoft-cs/cifar10`, `nielsr/CelebA-faces`, `../shared/data/cifar10`), read with
  `datasets.load_dataset`.

The image column is found by its feature type (CIFAR-10 calls it `img`), unless one is named. Each image is converted
to the model's channel count (greyscale, RGB; RGBA composited on white), resized so its shorter side is the
resolution, centre-cropped, and stored as uint8. Random flips and the scaling to [−1, 1] happen on the training
device (`to_model_input`). Bad data fails here, before training starts, with the row that is wrong.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import torch
from tqdm.auto import tqdm

from .seeding import stream_seed

__all__ = [
    "BUILTIN_SHAPES",
    "ImageData",
    "load_image_dataset",
    "find_image_column",
    "prepare_image",
    "decode_images",
    "load_training_images",
    "to_model_input",
    "global_batch_indices",
]

BUILTIN_SHAPES = "builtin:shapes"  # the name of the built-in dataset (`ddpm_hf.shapes`), also `source=None`
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class ImageData:
    """Decoded training images.

    Attributes:
        images: uint8 tensor (N, C, H, W).
        source: where they came from (for logs and model cards).
        split: the split they came from.
        column: the image column that was read.
    """

    images: torch.Tensor
    source: str
    split: str
    column: str


def _is_image_folder(path: Path) -> bool:
    """A folder of loose image files (for the `imagefolder` builder), not one of tabular data files that
    `load_dataset` reads: one scan of the tree decides."""
    data_suffixes = {".parquet", ".arrow", ".csv", ".json", ".jsonl"}
    has_images = False
    for file in path.rglob("*"):
        if file.suffix.lower() in data_suffixes and file.name != "metadata.jsonl":
            return False
        has_images = has_images or file.suffix.lower() in _IMAGE_SUFFIXES
    return has_images


def load_image_dataset(
    source: str | None, split: str = "train", image_size: int = 32, cache_dir: str | None = None
) -> datasets.Dataset:
    """Load one split of an image dataset (see the module docstring for what `source` may be).

    Raises:
        ValueError: the dataset does not exist, has no split `split` (the available ones are listed), or is empty.
    """
    if source is None or source == BUILTIN_SHAPES:
        from .shapes import make_shapes_dataset

        return make_shapes_dataset(image_size=image_size)
    path = Path(source)
    try:
        if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise ValueError(f"Dataset {source!r} has no split {split!r}; its splits are {sorted(loaded)}.")
                loaded = loaded[split]
        elif path.is_dir() and _is_image_folder(path):
            loaded = datasets.load_dataset("imagefolder", data_dir=str(path), split=split, cache_dir=cache_dir)
        else:
            loaded = datasets.load_dataset(source, split=split, cache_dir=cache_dir)
    except (FileNotFoundError, ConnectionError) as error:  # no such folder; a name not found, or no network
        raise ValueError(
            f"Dataset {source!r} does not exist: it is not a local folder and cannot be found on the Hub ({error})."
        ) from error
    except ValueError as error:
        if "corresponds to no data" in str(error):
            raise ValueError(f"Split {split!r} of dataset {source!r} is empty.") from error
        if "Unknown split" in str(error) or "Bad split" in str(error):
            raise ValueError(f"Dataset {source!r} has no split {split!r}: {error}") from error
        raise
    except Exception as error:  # datasets raises several types for a name it cannot resolve
        if type(error).__name__ in ("DatasetNotFoundError", "EmptyDatasetError", "DataFilesNotFoundError"):
            raise ValueError(f"Dataset {source!r} cannot be loaded: {error}") from error
        raise
    if len(loaded) == 0:
        raise ValueError(f"Split {split!r} of dataset {source!r} is empty.")
    return loaded


def find_image_column(features: datasets.Features, requested: str | None = None) -> str:
    """The name of the image column: `requested` if given, else the first column of feature type `datasets.Image`.

    Raises:
        ValueError: `requested` is not a column, or no column holds images (the columns are listed).
    """
    columns = {name: type(feature).__name__ for name, feature in features.items()}
    if requested is not None:
        if requested not in features:
            raise ValueError(f"Image column {requested!r} does not exist; the columns are {columns}.")
        return requested
    for name, feature in features.items():
        if isinstance(feature, datasets.Image):
            return name
    raise ValueError(f"No image column found (no column of type datasets.Image); the columns are {columns}.")


def prepare_image(image: PIL.Image.Image, resolution: int, channels: int, center_crop: bool = True) -> np.ndarray:
    """Convert one image to `channels` channels, resize its shorter side to `resolution` and crop the centre.

    Returns:
        uint8 array (channels, resolution, resolution).
    """
    if channels not in (1, 3):
        raise ValueError(f"Only 1- or 3-channel models can be trained on images, got {channels} channels.")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = PIL.Image.alpha_composite(background, rgba)
    image = image.convert("L" if channels == 1 else "RGB")
    width, height = image.size
    if center_crop:
        scale = resolution / min(width, height)
        size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
        if size != (width, height):
            image = image.resize(size, PIL.Image.Resampling.BICUBIC)
        left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
        image = image.crop((left, top, left + resolution, top + resolution))
    elif (width, height) != (resolution, resolution):
        image = image.resize((resolution, resolution), PIL.Image.Resampling.BICUBIC)
    array = np.asarray(image, dtype=np.uint8)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return np.ascontiguousarray(array)


def _open_image(value: object) -> PIL.Image.Image:
    """Open an undecoded `datasets.Image` value ({"bytes", "path"}), a PIL image, or a path."""
    if isinstance(value, PIL.Image.Image):
        return value
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return PIL.Image.open(io.BytesIO(value["bytes"]))
        if value.get("path"):
            return PIL.Image.open(value["path"])
    if isinstance(value, str):
        return PIL.Image.open(value)
    raise TypeError(f"not an image: {type(value).__name__}")


def decode_images(
    dataset: datasets.Dataset,
    column: str,
    resolution: int,
    channels: int,
    center_crop: bool = True,
    show_progress: bool = True,
) -> torch.Tensor:
    """Decode every image of `dataset[column]` with `prepare_image` into one uint8 tensor (N, C, H, W).

    Raises:
        ValueError: an image cannot be read; the message names the row.
    """
    if isinstance(dataset.features[column], datasets.Image):
        dataset = dataset.cast_column(column, datasets.Image(decode=False))
    out = torch.empty((len(dataset), channels, resolution, resolution), dtype=torch.uint8)
    rows = dataset.select_columns([column]).iter(batch_size=256)
    index = 0
    with tqdm(total=len(dataset), desc="Decoding images", unit="img", disable=not show_progress) as progress:
        for batch in rows:
            for value in batch[column]:
                try:
                    with _open_image(value) as image:
                        image.load()
                        out[index] = torch.from_numpy(prepare_image(image, resolution, channels, center_crop))
                except Exception as error:
                    raise ValueError(f"Unreadable image in row {index} of column {column!r}: {error}") from error
                index += 1
            progress.update(len(batch[column]))
    return out


def load_training_images(
    source: str | None,
    split: str,
    image_column: str | None,
    resolution: int,
    channels: int,
    center_crop: bool = True,
    cache_dir: str | None = None,
    show_progress: bool = True,
    num_images: int | None = None,
) -> ImageData:
    """Load, check and decode a split: `load_image_dataset`, `find_image_column`, `decode_images`; only its first
    `num_images` rows when given."""
    dataset = load_image_dataset(source, split=split, image_size=resolution, cache_dir=cache_dir)
    column = find_image_column(dataset.features, image_column)
    if num_images is not None and num_images < len(dataset):
        dataset = dataset.select(range(num_images))
    images = decode_images(dataset, column, resolution, channels, center_crop, show_progress)
    return ImageData(images=images, source=source or BUILTIN_SHAPES, split=split, column=column)


def to_model_input(images: torch.Tensor, flip: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 images (N, C, H, W) to floats in [−1, 1], mirrored left-right where `flip` (N,) is True."""
    x = images.float().div_(127.5).sub_(1.0)
    if flip is not None:
        x = torch.where(flip.reshape(-1, 1, 1, 1), x.flip(-1), x)
    return x


@functools.lru_cache(maxsize=2)  # a batch reads one epoch's permutation, or two where it straddles them
def _epoch_permutation(num_images: int, seed: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(stream_seed(seed, 0, epoch))
    return torch.randperm(num_images, generator=generator)


def global_batch_indices(num_images: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """The dataset rows of the global batch of optimizer step `step` (counted from 0).

    The rows are read in order from a stream of shuffled epochs, each a permutation seeded by (seed, epoch); batch
    `step` holds positions [step·B, (step+1)·B) of the stream, so a batch may straddle two epochs and every image is
    seen once per epoch. The result depends only on the arguments: not on the number of processes, and not on
    whether the run was resumed.
    """
    start = step * batch_size
    first_epoch, offset = divmod(start, num_images)
    parts, needed, epoch = [], batch_size, first_epoch
    while needed > 0:
        permutation = _epoch_permutation(num_images, seed, epoch)
        taken = permutation[offset : offset + needed]
        parts.append(taken)
        needed -= len(taken)
        epoch, offset = epoch + 1, 0
    return torch.cat(parts)
