"""Training checkpoints: safetensors and JSON only, written atomically.

A checkpoint is a folder `checkpoint-<step>` holding everything a run needs to continue exactly where it stopped:

    model.safetensors       the trained network's weights
    ema.safetensors         the exponential moving average of the weights
    optimizer.safetensors   the optimizer's tensors (Adam's moments and step counts)
    state.json              a `TrainingState` (step, learning-rate schedule, EMA update count, loss scaler, training
                            configuration) and the optimizer's structure and hyper-parameters

No pickle is written or read. Each safetensors file records its role and step in its metadata, so a file swapped in
from another checkpoint, or between roles, is refused by name; so are weights that are not finite, since resuming
from them can only diverge. All other randomness of a run is a function of (seed, step) (see `ddpm_hf.train`), so
no random-number-generator state needs storing. The folder is written under a temporary name and renamed into
place, so a crash while writing never leaves a folder named `checkpoint-<step>` that is incomplete.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

__all__ = [
    "replace_folder",
    "TrainingState",
    "Checkpoint",
    "CheckpointWriteError",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "prune_checkpoints",
]

_NAME = re.compile(r"^checkpoint-(\d+)$")
_FILES = ("model.safetensors", "ema.safetensors", "optimizer.safetensors", "state.json")


_ROLES = ("model", "ema", "optimizer")


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, say); the previous checkpoints are untouched."""


@dataclass(frozen=True)
class TrainingState:
    """A training run's state at the end of optimizer step `step`, besides tensors: what `state.json` holds."""

    step: int
    config: dict[str, Any]  # the run's `TrainingConfig`, as a dict
    lr_schedule: dict[str, Any]  # the learning-rate scheduler's `state_dict()`
    ema_updates: int
    grad_scaler: dict[str, Any] | None  # fp16's loss scaler, if any
    images_seen: int

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, values: Any, path: Path) -> TrainingState:
        """Read the fields of `values` (extra keys are ignored), naming `path` and the field that is missing or
        of the wrong type."""
        if not isinstance(values, dict):
            raise ValueError(f"Corrupt checkpoint file {path}: it holds a {type(values).__name__}, not an object.")
        fields = {}
        for name, hint in typing.get_type_hints(cls).items():
            if name not in values:
                raise ValueError(f"Corrupt checkpoint file {path}: the field {name!r} is missing.")
            value = values[name]
            options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
            kinds = tuple(typing.get_origin(kind) or kind for kind in options)
            if not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:
                expected = " or ".join("null" if kind is type(None) else kind.__name__ for kind in kinds)
                raise ValueError(
                    f"Corrupt checkpoint file {path}: {name} must be {expected}, got {type(value).__name__}."
                )
            fields[name] = value
        return cls(**fields)


@dataclass
class Checkpoint:
    """What `load_checkpoint` returns."""

    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    state: TrainingState

    @property
    def step(self) -> int:
        return self.state.step


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


def _join_optimizer_state(tensors: dict[str, torch.Tensor], structure: Any, path: Path) -> dict[str, Any]:
    try:
        state = {}
        for index, entry in structure["state"].items():
            state[int(index)] = {
                name: tensors[value["tensor"]] if "tensor" in value else value["value"] for name, value in entry.items()
            }
        return {"state": state, "param_groups": structure["param_groups"]}
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(
            f"Corrupt checkpoint {path}: optimizer.safetensors and the optimizer structure in state.json do not match "
            f"({type(error).__name__}: {error})."
        ) from None


def _write_safetensors(tensors: dict[str, torch.Tensor], path: Path, role: str, step: int) -> None:
    metadata = {"ddpm_hf.role": role, "ddpm_hf.step": str(step)}
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path), metadata=metadata)


def _read_safetensors(path: Path, role: str, step: int) -> dict[str, torch.Tensor]:
    """The tensors of `path`, checked to be this checkpoint's `role` file of `step` and finite."""
    try:
        with safe_open(str(path), framework="pt") as handle:  # one read for the metadata and the tensors
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise ValueError(f"Corrupt checkpoint file {path}: {error}.") from error
    found = (metadata.get("ddpm_hf.role", role), metadata.get("ddpm_hf.step", str(step)))  # older files: unmarked
    if found != (role, str(step)):
        raise ValueError(
            f"Checkpoint file {path} holds the {found[0]} tensors of step {found[1]}, not the {role} tensors of step "
            f"{step}: it was swapped in from elsewhere."
        )
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(
                f"Checkpoint file {path} holds non-finite values (in {name!r}): resuming from it cannot work; resume "
                "from an earlier checkpoint (--resume CHECKPOINT_FOLDER)."
            )
    return tensors


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def save_checkpoint(
    checkpoints_dir: Path,
    model: dict[str, torch.Tensor],
    ema: dict[str, torch.Tensor],
    optimizer: dict[str, Any],
    state: TrainingState,
) -> Path:
    """Write `checkpoints_dir/checkpoint-<step>` atomically and return its path.

    Args:
        model, ema: state dicts of the network and of its average.
        optimizer: `optimizer.state_dict()`.
        state: the rest of the run's state; its `step` names the folder.

    Raises:
        CheckpointWriteError: the folder could not be written (named); nothing of it is left, earlier ones are intact.
    """
    step = state.step
    final = checkpoints_dir / f"checkpoint-{step:07d}"
    temporary = checkpoints_dir / f".tmp-checkpoint-{step:07d}"
    try:
        checkpoints_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir()
        optimizer_tensors, optimizer_structure = _split_optimizer_state(optimizer)
        for role, tensors in zip(_ROLES, (model, ema, optimizer_tensors), strict=True):
            _write_safetensors(tensors, temporary / f"{role}.safetensors", role, step)
        (temporary / "state.json").write_text(json.dumps({**state.to_json(), "optimizer": optimizer_structure}))
        for name in _FILES:
            _fsync(temporary / name)
        replace_folder(temporary, final)  # the same step written again (a resumed run) is replaced only once complete
    except (OSError, SafetensorError) as error:
        shutil.rmtree(temporary, ignore_errors=True)
        previous = latest_checkpoint(checkpoints_dir)
        intact = f"the previous checkpoint {previous.name} is intact" if previous else "no earlier checkpoint exists"
        reason = getattr(error, "strerror", None) or str(error)
        raise CheckpointWriteError(f"Could not write the checkpoint {final} ({reason}); {intact}.") from error
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
        ValueError: a file is corrupt, swapped in from another checkpoint, or holds non-finite values (named).
    """
    if not path.is_dir():
        raise FileNotFoundError(f"No checkpoint folder at {path}.")
    for name in _FILES:
        if not (path / name).is_file():
            raise FileNotFoundError(f"Checkpoint {path} is incomplete: {name} is missing.")
    try:
        values = json.loads((path / "state.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"Corrupt checkpoint file {path / 'state.json'}: {error}.") from error
    state = TrainingState.from_json(values, path / "state.json")
    if "optimizer" not in values:
        raise ValueError(f"Corrupt checkpoint file {path / 'state.json'}: the field 'optimizer' is missing.")
    model, ema, optimizer = (_read_safetensors(path / f"{role}.safetensors", role, state.step) for role in _ROLES)
    return Checkpoint(model, ema, _join_optimizer_state(optimizer, values["optimizer"], path), state)


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
