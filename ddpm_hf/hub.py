"""Where pipelines are stored: checks of saved pipeline folders before anything is loaded from them.

A pipeline folder is diffusers' layout (`model_index.json`, `unet/`, `scheduler/`) or the flat layout of the
`google/ddpm-*` repos (`model_index.json`, `config.json`, weights and `scheduler_config.json` at the root). Weights are
accepted as safetensors; pickle files (`.bin`, `.pt`, `.ckpt`) only when the caller explicitly allows them, since
loading a pickle can run arbitrary code.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError, safe_open

__all__ = ["check_pipeline_folder", "PICKLE_SUFFIXES"]

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_MODEL_WEIGHTS_PREFIX = "diffusion_pytorch_model"


def _component_folder(root: Path, name: str) -> Path:
    """The folder of component `name`: its subfolder, or the root in the flat layout."""
    return root / name if (root / name).is_dir() else root


def _check_model_weights(folder: Path, allow_pickle: bool) -> None:
    safetensors_files = sorted(folder.glob(f"{_MODEL_WEIGHTS_PREFIX}*.safetensors"))
    pickle_files = sorted(p for p in folder.glob(f"{_MODEL_WEIGHTS_PREFIX}*") if p.suffix in PICKLE_SUFFIXES)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"Missing model config {folder / 'config.json'}.")
    if not safetensors_files:
        if pickle_files and not allow_pickle:
            raise ValueError(
                f"{pickle_files[0]} is a pickle weights file and there is no safetensors file beside it. Loading a "
                "pickle can run arbitrary code: pass allow_pickle=True only if you trust this file."
            )
        if not pickle_files:
            raise FileNotFoundError(f"Missing weights file {folder / (_MODEL_WEIGHTS_PREFIX + '.safetensors')}.")
    for path in safetensors_files:
        try:
            with safe_open(str(path), framework="pt") as weights:
                weights.keys()
        except SafetensorError as error:
            raise ValueError(f"Corrupt weights file {path}: {error}.") from error


def check_pipeline_folder(root: Path, allow_pickle: bool = False) -> None:
    """Check that `root` holds a loadable pipeline before loading it.

    Raises:
        FileNotFoundError: no `model_index.json`, or a component's config or weights are missing (the message names
            the file).
        ValueError: an unreadable `model_index.json`, a corrupt safetensors file, or pickle weights without
            `allow_pickle=True` (named).
    """
    index_path = root / "model_index.json"
    if not index_path.is_file():
        raise FileNotFoundError(f"{root} is not a saved pipeline: it has no model_index.json.")
    try:
        index = json.loads(index_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"Unreadable {index_path}: {error}.") from error
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or entry[0] is None:
            continue
        folder = _component_folder(root, name)
        if entry[1].endswith("Scheduler"):
            if not (folder / "scheduler_config.json").is_file():
                raise FileNotFoundError(f"Missing scheduler config {folder / 'scheduler_config.json'}.")
        else:
            _check_model_weights(folder, allow_pickle)
