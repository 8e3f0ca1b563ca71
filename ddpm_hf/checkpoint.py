"""Training checkpoints: safetensors and JSON only, written atomically.

A checkpoint is a folder `checkpoint-<step>` holding everything a run needs to continue exactly where it stopped:

    model.safetensors       the trained network's weights
    ema.safetensors         the exponential moving average of the weights
    optimizer.safetensors   the optimizer's tensors (Adam's moments and step counts)
    state.json              step, optimizer structure and hyper-parameters, learning-rate schedule, EMA update count,
                            data position and the training configuration

No pickle is written or read. All other randomness of a run is a function of (seed, step) (see `ddpm_hf.train`), so
no random-number-generator state needs storing. The folder is written under a temporary name and renamed into
place, so a crash while writing never leaves a folder named `checkpoint-<step>` that is incomplete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

__all__ = [
    "replace_folder",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "prune_checkpoints",
]

_NAME = re.compile(r"^checkpoint-(\d+)$")
_FILES = ("model.safetensors", "ema.safetensors", "optimizer.safetensors", "state.json")


@dataclass
class Checkpoint:
    """What `load_checkpoint` returns."""

    step: int
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    state: dict[str, Any]


def _split_optimizer_state(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Separate an optimizer state dict into flat tensors (for safetensors) and a JSON-able structure."""
    tensors, structure = {}, {"param_groups": state_dict["param_groups"], "state": {}}
    for index, values in state_dict["state"].items():
        entry = {}
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                key = f"state.{index}.{name}"
                tensors[key] = value.detach().contiguous().cpu()
                entry[name] = {"tensor": key}
            else:
                entry[name] = {"value": value}
        structure["state"][str(index)] = entry
    return tensors, structure


def _join_optimizer_state(tensors: dict[str, torch.Tensor], structure: dict[str, Any]) -> dict[str, Any]:
    state = {}
    for index, entry in structure["state"].items():
        state[int(index)] = {
            name: tensors[value["tensor"]] if "tensor" in value else value["value"] for name, value in entry.items()
        }
    return {"state": state, "param_groups": structure["param_groups"]}


def _write_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def save_checkpoint(
    checkpoints_dir: Path,
    step: int,
    model: dict[str, torch.Tensor],
    ema: dict[str, torch.Tensor],
    optimizer: dict[str, Any],
    state: dict[str, Any],
) -> Path:
    """Write `checkpoints_dir/checkpoint-<step>` atomically and return its path.

    Args:
        model, ema: state dicts of the network and of its average.
        optimizer: `optimizer.state_dict()`.
        state: anything JSON-serialisable (step counters, schedule state, configuration).
    """
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoints_dir / f"checkpoint-{step:07d}"
    temporary = checkpoints_dir / f".tmp-checkpoint-{step:07d}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    optimizer_tensors, optimizer_structure = _split_optimizer_state(optimizer)
    _write_safetensors(model, temporary / "model.safetensors")
    _write_safetensors(ema, temporary / "ema.safetensors")
    _write_safetensors(optimizer_tensors, temporary / "optimizer.safetensors")
    (temporary / "state.json").write_text(json.dumps({**state, "step": step, "optimizer": optimizer_structure}))
    for name in _FILES:
        _fsync(temporary / name)
    replace_folder(temporary, final)  # the same step written again (a resumed run) is replaced only once complete
    return final


def replace_folder(complete: Path, final: Path) -> None:
    """Move the completely written folder `complete` to `final`, replacing what is there: the old folder is renamed
    aside first and removed last, so `final` is never a half-written folder."""
    if final.exists():
        stale = final.with_name(f".stale-{final.name}")
        shutil.rmtree(stale, ignore_errors=True)
        os.replace(final, stale)
        os.replace(complete, final)
        shutil.rmtree(stale)
    else:
        os.replace(complete, final)


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint folder written by `save_checkpoint`.

    Raises:
        FileNotFoundError: the folder or one of its files is missing (named).
        ValueError: a file is corrupt (named).
    """
    if not path.is_dir():
        raise FileNotFoundError(f"No checkpoint folder at {path}.")
    for name in _FILES:
        if not (path / name).is_file():
            raise FileNotFoundError(f"Checkpoint {path} is incomplete: {name} is missing.")
    try:
        state = json.loads((path / "state.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"Corrupt checkpoint file {path / 'state.json'}: {error}.") from error
    loaded = {}
    for name in ("model", "ema", "optimizer"):
        try:
            loaded[name] = load_file(str(path / f"{name}.safetensors"))
        except SafetensorError as error:
            raise ValueError(f"Corrupt checkpoint file {path / f'{name}.safetensors'}: {error}.") from error
    optimizer = _join_optimizer_state(loaded["optimizer"], state.pop("optimizer"))
    return Checkpoint(step=state["step"], model=loaded["model"], ema=loaded["ema"], optimizer=optimizer, state=state)


def _complete_checkpoints(checkpoints_dir: Path) -> list[tuple[int, Path]]:
    if not checkpoints_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in checkpoints_dir.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return sorted(found)


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The checkpoint of the highest step in `checkpoints_dir`, or None; unfinished temporary folders are ignored."""
    found = _complete_checkpoints(checkpoints_dir)
    return found[-1][1] if found else None


def prune_checkpoints(checkpoints_dir: Path, keep: int) -> list[Path]:
    """Delete all but the `keep` most recent checkpoints (and leftovers of interrupted writes); return the deleted."""
    found = _complete_checkpoints(checkpoints_dir)
    deleted = [path for _, path in found[: max(len(found) - keep, 0)]]
    deleted += [p for p in checkpoints_dir.glob(".tmp-checkpoint-*")] + list(
        checkpoints_dir.glob(".stale-checkpoint-*")
    )
    for path in deleted:
        shutil.rmtree(path, ignore_errors=True)
    return deleted
