"""Training images: any image dataset `datasets` can load, decoded into uint8 tensors at the model's resolution:
all at once (`load_training_images`), a few rows at a time (`split_rows`, for data larger than memory), or once per
machine into a prepared file (`ddpm_hf.image_cache`, which training uses).

Sources, by what `source` names:

* nothing (None) or `"builtin:shapes"`: the built-in dataset of coloured shapes (`ddpm_hf.shapes`), generated on the
  spot, no network;
* a folder written by `Dataset.save_to_disk`;
* a folder of image files (read with the `imagefolder` builder; `list_image_folder` lists a plain one, which that
  builder reads as one "train" split, in the same order, about 400 times faster);
* any other folder or a Hub name (`uoft-cs/cifar10`, `nielsr/CelebA-faces`, `../shared/data/cifar10`), read with
  `datasets.load_dataset`.

The image column is found by its feature type (CIFAR-10 calls it `img`), unless one is named. Each image is brought to
8 bits (see `to_eight_bits` for 16-bit, 32-bit and float images), converted to the model's channel count (greyscale
or RGB; transparent images are composited on white), resized so its shorter side is the resolution, centre-cropped,
and stored as uint8. Random flips and the scaling to [−1, 1] happen on the training device (`to_model_input`). Bad
data fails here, before training starts, with the row (and the file, when the dataset knows it) that is wrong.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import torch
from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder
from tqdm.auto import tqdm

from .seeding import Stream, stream_seed

__all__ = [
    "BUILTIN_SHAPES",
    "ImageData",
    "ImageFiles",
    "list_image_folder",
    "load_image_dataset",
    "find_image_column",
    "SUPPORTED_CHANNELS",
    "check_channels",
    "to_eight_bits",
    "PREPARATION",
    "prepare_image",
    "decode_row",
    "SplitRows",
    "split_rows",
    "decode_images",
    "load_training_images",
    "to_model_input",
    "global_batch_indices",
]

BUILTIN_SHAPES = "builtin:shapes"  # the name of the built-in dataset (`ddpm_hf.shapes`), also `source=None`
SUPPORTED_CHANNELS = (1, 3)  # images become greyscale or RGB: a model with other input channels cannot use them
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
_DATA_SUFFIXES = {".parquet", ".arrow", ".csv", ".json", ".jsonl"}
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
# What `prepare_image` does, part of the key of prepared files (`ddpm_hf.image_cache`): change it with the function.
PREPARATION = "to_eight_bits, L or RGB, bicubic resize of the shorter side, centre crop or squash; version 1"
# What makes `datasets` read a folder of images as other than one "train" split of all of them (its data_files
# module): a path that names a split (a folder or file name with a split word between non-letters), a metadata file,
# a sharded split file, or the files of its other builders.
_SPLIT_NAME = re.compile(
    r"(?:^|[-._ 0-9/])(?:train|training|validation|valid|dev|val|test|testing|eval|evaluation)(?:[-._ 0-9/]|$)"
)
_SHARDED_SPLIT = re.compile(r"data/[^/]*-[0-9]{5}-of-[0-9]{5}[^/]*\.[^/]*")
_NOT_PLAIN_NAMES = {"metadata.csv", "metadata.jsonl", "metadata.parquet", "task.toml", "instruction.md"}


@dataclass
class ImageData:
    """Decoded training images.

    Attributes:
        images: uint8 tensor (N, C, H, W), in memory or mapped from a prepared file (`ddpm_hf.image_cache`).
        source: where they came from (for logs and model cards).
        split: the split they came from.
        column: the image column that was read.
        file: the prepared file the images are mapped from, if they are.
    """

    images: torch.Tensor
    source: str
    split: str
    column: str
    file: Path | None = None


def _is_image_folder(path: Path) -> bool:
    """A folder of loose image files (for the `imagefolder` builder), not one of tabular data files that
    `load_dataset` reads: one scan of the tree decides."""
    has_images = False
    for file in path.rglob("*"):
        if file.suffix.lower() in _DATA_SUFFIXES and file.name != "metadata.jsonl":
            return False
        has_images = has_images or file.suffix.lower() in _IMAGE_SUFFIXES
    return has_images


@dataclass
class ImageFiles:
    """The images of a plain image folder, in the order `datasets`' imagefolder reads them.

    Attributes:
        folder: the folder.
        names: the files' paths relative to `folder` ("/" between folders), sorted as strings.
        fingerprint: SHA-256 (hex) of every file's (name, size, modification time): any change to a file changes it.
    """

    folder: Path
    names: list[str]
    fingerprint: str


def _walk(folder: str, prefix: str = "") -> Iterator[tuple[str, os.DirEntry]]:
    """The files under `folder` as (path relative to it, entry), in the string order of those paths (a folder sorts
    as its name followed by "/"), skipping hidden files and folders (".name") and "__name" folders as `datasets`
    does."""
    with os.scandir(folder) as scan:
        entries = sorted((e for e in scan if not e.name.startswith(".")), key=lambda e: e.name + "/" * e.is_dir())
    for entry in entries:
        if not entry.is_dir():
            yield prefix + entry.name, entry
        elif not entry.name.startswith("__"):
            yield from _walk(entry.path, f"{prefix}{entry.name}/")


def _keeps_the_folder_plain(name: str) -> bool:
    """Whether `datasets` still reads a folder that holds a file of relative path `name` as one "train" split."""
    suffix = os.path.splitext(name)[1].lower()
    return not (
        _SPLIT_NAME.search(name) or _SHARDED_SPLIT.fullmatch(name) or os.path.basename(name) in _NOT_PLAIN_NAMES
        or suffix in _DATA_SUFFIXES or suffix == ".eval"
    )  # fmt: skip


def list_image_folder(folder: Path) -> ImageFiles | None:
    """The image files of `folder` when `datasets` reads it as one "train" split of all of them (no path names a
    split, no metadata or data file); None otherwise (`load_image_dataset` reads such a folder).

    One `os.scandir` walk with a stat of each file, about 5 µs a file where `datasets`' imagefolder builder lists
    through fsspec at about 2 ms a file (5,000 files: 0.02 s against 9.5 s), with the files that builder takes (its
    extensions) in its order (the paths sorted as strings, which `test_image_cache` checks against it).
    """
    extensions, names, digest = set(ImageFolder.EXTENSIONS), [], hashlib.sha256()
    for name, entry in _walk(str(folder)):
        if not _keeps_the_folder_plain(name):
            return None
        if os.path.splitext(name)[1].lower() in extensions:
            stat = entry.stat()
            digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            names.append(name)
    return ImageFiles(folder, names, digest.hexdigest()) if names else None


def load_image_dataset(
    source: str | None, split: str = "train", image_size: int = 32, cache_dir: str | None = None
) -> datasets.Dataset:
    """Load one split of an image dataset (see the module docstring for what `source` may be).

    Raises:
        ValueError: the dataset does not exist, is a folder that holds no images or data files, has no split
            `split` (the available ones are listed), or is empty.
    """
    if source is None or source == BUILTIN_SHAPES:
        from .shapes import make_shapes_dataset

        return make_shapes_dataset(image_size=image_size)
    path = Path(source)
    if path.is_dir() and not any(
        file.suffix.lower() in _IMAGE_SUFFIXES | _DATA_SUFFIXES for file in path.rglob("*") if file.is_file()
    ):  # `datasets` would say the folder "doesn't contain any data files" and we that it does not exist
        raise ValueError(
            f"Dataset folder {path} holds no images: it has no image files ({', '.join(sorted(_IMAGE_SUFFIXES))}) "
            "and no data files (parquet, arrow, csv, json), in it or below it."
        )
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


def check_channels(channels: int) -> None:
    """Refuse a channel count images cannot be prepared for (before anything is loaded or decoded).

    Raises:
        ValueError: `channels` is not 1 (greyscale) or 3 (RGB).
    """
    if channels not in SUPPORTED_CHANNELS:
        raise ValueError(
            f"The model takes {channels} input channels, but images can only be prepared as 1 (greyscale) or 3 (RGB) "
            "channels: choose a UNet with in_channels 1 or 3 for image data."
        )


def to_eight_bits(image: PIL.Image.Image) -> PIL.Image.Image:
    """`image` with 8 bits per channel and no transparency: mode "L" or "RGB", whatever mode PIL opened it in.

    PIL's own `convert("L")` clips 16-bit and 32-bit values at 255 (a 16-bit PNG turns white), so those are scaled:

    * "I;16" (16-bit greyscale PNG and TIFF, any byte order) and "I" (32-bit integer): 0 … 65535 maps linearly to
      0 … 255, rounded to the nearest level (v · 255 / 65535 = v / 257, never halfway); "I" values outside
      0 … 65535 are clipped first.
    * "F" (32-bit float): an image whose values all lie in [0, 1] is scaled by 255; any other is taken as 0 … 255
      levels and clipped to that range. Both are rounded to the nearest level (halves to even); NaN becomes 0.
    * Transparency ("RGBA", "LA", "PA", "P" or "L"/"RGB" with a transparent colour): composited on a white
      background, as a viewer shows such an image on a white page.
    * Everything else ("1", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", …): PIL's conversion to RGB; "L" and "RGB"
      are returned as they are.
    """
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        values = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        return PIL.Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8))
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
        if values.size and values.min() >= 0.0 and values.max() <= 1.0:
            values = values * 255.0
        return PIL.Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))
    if mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return PIL.Image.alpha_composite(background, rgba).convert("RGB")
    return image if mode in ("L", "RGB") else image.convert("RGB")


def prepare_image(image: PIL.Image.Image, resolution: int, channels: int, center_crop: bool = True) -> np.ndarray:
    """Bring one image to 8 bits (`to_eight_bits`) and `channels` channels, resize its shorter side to `resolution`
    and crop the centre.

    Returns:
        uint8 array (channels, resolution, resolution).
    """
    check_channels(channels)
    image = to_eight_bits(image).convert("L" if channels == 1 else "RGB")
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
    return np.array(array, order="C")  # a writable copy: PIL's buffer is read-only, which torch warns about


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


def _file_of(value: object) -> str | None:
    """The file an image value came from, when the dataset recorded it (image folders do; parquet files may)."""
    if isinstance(value, dict):
        return value.get("path") or None
    if isinstance(value, str):
        return value
    return getattr(value, "filename", None) or None


def decode_row(
    value: object, row: int, column: str, resolution: int, channels: int, center_crop: bool = True
) -> np.ndarray:
    """`prepare_image` of row `row`'s undecoded image (a `datasets.Image(decode=False)` value, a PIL image or a path).

    Raises:
        ValueError: the image cannot be read; one line naming the row, and the file when the dataset recorded it.
    """
    try:
        with _open_image(value) as image:
            image.load()
            return prepare_image(image, resolution, channels, center_crop)
    except Exception as error:
        file = _file_of(value)
        where = f"row {row} of column {column!r}" + (f" (file {file})" if file else "")
        reason = " ".join(str(error).split()) or type(error).__name__  # one line
        raise ValueError(f"Unreadable image in {where}: {reason}") from error


@dataclass
class SplitRows:
    """The images of a split, undecoded: `values(indices)` gives those rows as `decode_row` takes them, and `decode`
    prepares them; nothing is read before it is asked for.

    Attributes:
        count: the number of rows.
        values: rows `indices` (a range reads a contiguous slice), undecoded.
        column: the image column.
        source: the data set: a local folder's absolute path, a Hub name or the built-in shapes.
        fingerprint: changes with the content (`datasets`' fingerprint; for a plain image folder `ImageFiles`').
    """

    count: int
    values: Callable[[Sequence[int]], list]
    column: str
    source: str
    fingerprint: str

    def decode(self, indices: Sequence[int], resolution: int, channels: int, center_crop: bool = True) -> torch.Tensor:
        """Rows `indices` prepared by `decode_row`, as one uint8 tensor (len(indices), C, H, W).

        Raises:
            ValueError: an image cannot be read (the message names its row, and its file when known).
        """
        out = torch.empty((len(indices), channels, resolution, resolution), dtype=torch.uint8)
        for i, (row, value) in enumerate(zip(indices, self.values(indices), strict=True)):
            out[i] = torch.from_numpy(decode_row(value, row, self.column, resolution, channels, center_crop))
        return out


def split_rows(source: str | None, split: str, column: str | None, resolution: int, num_images: int | None = None,
               cache_dir: str | None = None) -> SplitRows:  # fmt: skip
    """The rows of a split (its first `num_images`): a plain image folder listed directly (`list_image_folder`), any
    other source through `datasets` (`load_image_dataset`).

    Raises:
        ValueError: what `load_image_dataset` and `find_image_column` raise.
    """
    local = source not in (None, BUILTIN_SHAPES) and Path(source).exists()
    files = list_image_folder(Path(source)) if local and Path(source).is_dir() else None
    if files is not None:
        return _folder_rows(files, source, split, column, num_images)
    dataset = load_image_dataset(source, split=split, image_size=resolution, cache_dir=cache_dir)
    column = find_image_column(dataset.features, column)
    if num_images is not None and num_images < len(dataset):
        dataset = dataset.select(range(num_images))
    dataset = dataset.select_columns([column])
    if isinstance(dataset.features[column], datasets.Image):
        dataset = dataset.cast_column(column, datasets.Image(decode=False))
    name = str(Path(source).resolve()) if local else source or BUILTIN_SHAPES
    return SplitRows(len(dataset), lambda indices: dataset[indices][column], column, name, dataset._fingerprint)


def _folder_rows(files: ImageFiles, source: str, split: str, column: str | None, num_images: int | None) -> SplitRows:
    """The rows of a plain image folder, which `datasets` reads as one split "train" with the images in "image"."""
    if split != "train":
        raise ValueError(f"Dataset {source!r} has no split {split!r}; its splits are ['train'].")
    column = find_image_column(datasets.Features({"image": datasets.Image()}), column)
    names, folder = files.names[:num_images], files.folder
    return SplitRows(len(names), lambda indices: [str(folder / names[i]) for i in indices], column,
                     str(folder.resolve()), files.fingerprint)  # fmt: skip


def decode_images(
    dataset: datasets.Dataset,
    column: str,
    resolution: int,
    channels: int,
    center_crop: bool = True,
    show_progress: bool = True,
    description: str = "Decoding images",
) -> torch.Tensor:
    """Decode every image of `dataset[column]` with `decode_row` into one uint8 tensor (N, C, H, W), showing a
    progress bar labelled `description`.

    Raises:
        ValueError: `channels` is not 1 or 3 (before anything is decoded), or an image cannot be read: the message
            names the row, and the file when the dataset recorded it.
    """
    check_channels(channels)
    if isinstance(dataset.features[column], datasets.Image):
        dataset = dataset.cast_column(column, datasets.Image(decode=False))
    out = torch.empty((len(dataset), channels, resolution, resolution), dtype=torch.uint8)
    rows = dataset.select_columns([column]).iter(batch_size=256)
    index = 0
    with tqdm(total=len(dataset), desc=description, unit="img", disable=not show_progress) as progress:
        for batch in rows:
            for value in batch[column]:
                out[index] = torch.from_numpy(decode_row(value, index, column, resolution, channels, center_crop))
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
    description: str | None = None,
) -> ImageData:
    """Load, check and decode a split: `load_image_dataset`, `find_image_column`, `decode_images`; only its first
    `num_images` rows when given. The progress bar reads `description` (default: "Decoding the SPLIT split").

    Raises:
        ValueError: `channels` is not 1 or 3 (before the dataset is read), or what those functions raise.
    """
    check_channels(channels)
    dataset = load_image_dataset(source, split=split, image_size=resolution, cache_dir=cache_dir)
    column = find_image_column(dataset.features, image_column)
    if num_images is not None and num_images < len(dataset):
        dataset = dataset.select(range(num_images))
    description = description or f"Decoding the {split} split"
    images = decode_images(dataset, column, resolution, channels, center_crop, show_progress, description)
    return ImageData(images=images, source=source or BUILTIN_SHAPES, split=split, column=column)


def to_model_input(images: torch.Tensor, flip: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 images (N, C, H, W) to floats in [−1, 1], mirrored left-right where `flip` (N,) is True."""
    x = images.float().div_(127.5).sub_(1.0)
    if flip is not None:
        x = torch.where(flip.reshape(-1, 1, 1, 1), x.flip(-1), x)
    return x


@functools.lru_cache(maxsize=2)  # a batch reads one epoch's permutation, or two where it straddles them
def _epoch_permutation(num_images: int, seed: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(stream_seed(seed, Stream.EPOCH_ORDER, epoch))
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
