"""Specification of `ddpm_hf.checkpoint`: complete, pickle-free, atomic training checkpoints."""

from __future__ import annotations

import pytest
import torch

from ddpm_hf.checkpoint import latest_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint


def trained_adam() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        model(torch.randn(5, 4)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, optimizer


def save(tmp_path, step, model, optimizer):
    return save_checkpoint(
        tmp_path, step, model.state_dict(), model.state_dict(), optimizer.state_dict(), {"note": "x"}
    )


def test_a_checkpoint_restores_the_optimizer_so_training_continues_identically(tmp_path):
    model, optimizer = trained_adam()
    path = save(tmp_path, 3, model, optimizer)
    checkpoint = load_checkpoint(path)
    assert checkpoint.step == 3 and checkpoint.state["note"] == "x"
    clone = torch.nn.Linear(4, 3)
    clone.load_state_dict(checkpoint.model)
    clone_optimizer = torch.optim.Adam(clone.parameters(), lr=1e-2)
    clone_optimizer.load_state_dict(checkpoint.optimizer)
    x = torch.randn(5, 4)
    for m, o in ((model, optimizer), (clone, clone_optimizer)):
        m(x).square().mean().backward()
        o.step()
    for a, b in zip(model.parameters(), clone.parameters(), strict=True):
        assert torch.equal(a, b)


def test_checkpoints_hold_only_safetensors_and_json(tmp_path):
    path = save(tmp_path, 1, *trained_adam())
    assert sorted(p.suffix for p in path.iterdir()) == [".json", ".safetensors", ".safetensors", ".safetensors"]


def test_latest_ignores_unfinished_writes_and_prune_keeps_the_newest(tmp_path):
    model, optimizer = trained_adam()
    for step in (5, 10, 15):
        save(tmp_path, step, model, optimizer)
    (tmp_path / ".tmp-checkpoint-0000020").mkdir()  # a write interrupted by a crash
    assert latest_checkpoint(tmp_path).name == "checkpoint-0000015"
    prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-0000010", "checkpoint-0000015"]
    assert latest_checkpoint(tmp_path / "nothing-here") is None


def test_rewriting_a_step_replaces_it_whole(tmp_path):
    model, optimizer = trained_adam()
    save(tmp_path, 5, model, optimizer)
    with torch.no_grad():
        model.weight.add_(1)
    save(tmp_path, 5, model, optimizer)
    assert torch.equal(load_checkpoint(tmp_path / "checkpoint-0000005").model["weight"], model.weight)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-0000005"]


def test_missing_and_corrupt_files_are_named(tmp_path):
    path = save(tmp_path, 1, *trained_adam())
    (path / "ema.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="ema.safetensors"):
        load_checkpoint(path)
    (path / "optimizer.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="optimizer.safetensors"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        load_checkpoint(tmp_path / "checkpoint-0000099")
