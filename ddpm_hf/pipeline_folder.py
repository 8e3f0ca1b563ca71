"""What a saved pipeline folder may hold, checked before anything in it is loaded or pushed.

A pipeline folder is diffusers' layout (`model_index.json`, `unet/`, `scheduler/`) or the flat layout of the
`google/ddpm-*` repos (`model_index.json`, `config.json`, weights and `scheduler_config.json` at the root). Its
`model_index.json` may name only what a DDPM pipeline holds, a `diffusers.UNet2DModel` and a diffusers scheduler:
any other class (a nested pipeline, custom code) could load files that are not checked here. Weights are accepted as
safetensors; pickle files (`.bin`, `.pt`, `.ckpt`) only when the caller explicitly allows them, since loading a
pickle can run arbitrary code.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import diffusers
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from safetensors import SafetensorError, safe_open

__all__ = [
    "PICKLE_SUFFIXES",
    "ALLOW_PICKLE_HINT",
    "check_pipeline_folder",
    "pipeline_files",
    "pipeline_configs",
    "read_json_object",
]

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# Users of the command line pass --allow-pickle; callers in Python, allow_pickle=True.
ALLOW_PICKLE_HINT = "pass allow_pickle=True (--allow-pickle on the command line) only if you trust"
_MODEL_WEIGHTS_PREFIX = "diffusion_pytorch_model"
# What a DDPM pipeline holds: anything else in model_index.json could load files that are not checked here.
_UNET_ENTRY = ["diffusers", "UNet2DModel"]
_COMPONENTS = ("unet", "scheduler")


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or none when there is no such file; a ValueError naming it when unreadable."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"Unreadable {path}: {error}.") from error
    if not isinstance(data, dict):
        raise ValueError(f"Unreadable {path}: it is not a JSON object.")
    return data


def _component_folder(root: Path, name: str) -> Path:
    """The folder of component `name`: its subfolder, or the root in the flat layout."""
    return root / name if (root / name).is_dir() else root


def _is_scheduler_class(entry: Any) -> bool:
    """Whether a `model_index.json` entry names a scheduler class of diffusers (DDPMScheduler, DDIMScheduler, ...)."""
    if not (isinstance(entry, list) and len(entry) == 2 and entry[0] == "diffusers" and isinstance(entry[1], str)):
        return False
    try:
        cls = getattr(diffusers, entry[1])
    except (AttributeError, ImportError, RuntimeError):  # diffusers' lazy import of an unknown or broken name
        return False
    return isinstance(cls, type) and issubclass(cls, SchedulerMixin)


def _components(root: Path) -> list[tuple[str, bool]]:
    """The (name, is_scheduler) of the components of the pipeline in `root`: its UNet and its scheduler, checked to be
    what `model_index.json` may name (any other class is refused: a nested pipeline as a component, for one, would
    load its own files, pickle weights included, past every check of this module).

    Raises:
        FileNotFoundError: no `model_index.json`.
        ValueError: it is unreadable, names custom code, lacks a component, or names a class a DDPM pipeline cannot
            hold (the message names the file and the component).
    """
    path = root / "model_index.json"
    index = read_json_object(path)
    if index is None:
        raise FileNotFoundError(f"{root} is not a saved pipeline: it has no model_index.json.")
    if not isinstance(index.get("_class_name", ""), str):
        raise ValueError(f"{path}: _class_name {index['_class_name']!r} names custom code, which is never loaded.")
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or entry == [None, None]:
            continue  # diffusers' own keys, configuration values and absent optional components load nothing
        if name not in _COMPONENTS:
            raise ValueError(f"{path}: {name!r} is not a component of a DDPM pipeline (only 'unet' and 'scheduler').")
    for name in _COMPONENTS:
        entry = index.get(name)
        if name == "unet" and entry != _UNET_ENTRY:
            expected = json.dumps(_UNET_ENTRY)
        elif name == "scheduler" and not _is_scheduler_class(entry):
            expected = 'a diffusers scheduler class, such as ["diffusers", "DDPMScheduler"]'
        else:
            continue
        found = "missing" if entry is None else json.dumps(entry)
        raise ValueError(
            f"{path}: component {name!r} is {found}; a DDPM pipeline's {name} must be {expected}. Any other class "
            "could load files that are not checked (a nested pipeline, pickle weights), so it is refused."
        )
    return [("unet", False), ("scheduler", True)]


def _check_model_weights(folder: Path, allow_pickle: bool) -> None:
    safetensors_files = sorted(folder.glob(f"{_MODEL_WEIGHTS_PREFIX}*.safetensors"))
    pickle_files = sorted(p for p in folder.glob(f"{_MODEL_WEIGHTS_PREFIX}*") if p.suffix in PICKLE_SUFFIXES)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"Missing model config {folder / 'config.json'}.")
    if not safetensors_files:
        if pickle_files and not allow_pickle:
            raise ValueError(
                f"{pickle_files[0]} is a pickle weights file and there is no safetensors file beside it. Loading a "
                f"pickle can run arbitrary code: {ALLOW_PICKLE_HINT} this file."
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
        ValueError: an unreadable `model_index.json` or one naming a class a DDPM pipeline cannot hold (a nested
            pipeline, custom code), a corrupt safetensors file, or pickle weights without `allow_pickle=True`
            (named).
    """
    for name, is_scheduler in _components(root):
        folder = _component_folder(root, name)
        if is_scheduler:
            if not (folder / "scheduler_config.json").is_file():
                raise FileNotFoundError(f"Missing scheduler config {folder / 'scheduler_config.json'}.")
        else:
            _check_model_weights(folder, allow_pickle)


def pipeline_files(root: Path) -> list[str]:
    """The files of the pipeline saved in `root` that make it loadable, as `/`-separated paths relative to `root`:
    `model_index.json` and, for each component, its configuration and safetensors weights (with the index of
    sharded weights), in the component's subfolder or, in the flat layout, at the root. Nothing else."""
    files = {"model_index.json"}
    for name, is_scheduler in _components(root):
        folder = _component_folder(root, name)
        prefix = "" if folder == root else f"{name}/"
        if is_scheduler:
            files.add(prefix + "scheduler_config.json")
            continue
        files.add(prefix + "config.json")
        for pattern in (f"{_MODEL_WEIGHTS_PREFIX}*.safetensors", f"{_MODEL_WEIGHTS_PREFIX}*.safetensors.index.json"):
            files.update(prefix + path.name for path in folder.glob(pattern) if path.is_file())
    return sorted(files)


def pipeline_configs(root: Path) -> tuple[dict[str, Any], dict[str, Any], int | None]:
    """(UNet config, scheduler config, UNet parameter count or None) of the pipeline in `root`."""
    unet_config: dict[str, Any] = {}
    scheduler_config: dict[str, Any] = {}
    parameters = None
    for name, is_scheduler in _components(root):
        folder = _component_folder(root, name)
        if is_scheduler:
            scheduler_config = json.loads((folder / "scheduler_config.json").read_text())
        elif not unet_config:
            unet_config = json.loads((folder / "config.json").read_text())
            weights = folder / f"{_MODEL_WEIGHTS_PREFIX}.safetensors"
            if weights.is_file():
                with safe_open(str(weights), framework="numpy") as tensors:
                    parameters = sum(math.prod(tensors.get_slice(key).get_shape()) for key in tensors.keys())
    return unet_config, scheduler_config, parameters
