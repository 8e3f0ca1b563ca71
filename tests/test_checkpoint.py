"""Specification of `ddpm_hf.checkpoint`: complete, pickle-free, atomic training checkpoints."""

from __future__ import annotations

import pytest
import torch

from ddpm_hf.checkpoint import TrainingState, latest_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint


def trained_adam() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        model(torch.randn(5, 4)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, optimizer


def state(step: int) -> TrainingState:
    return TrainingState(step, {"seed": 0}, {"last_epoch": step}, ema_updates=step, grad_scaler=None, images_seen=8)


def save(tmp_path, step, model, optimizer):
    return save_checkpoint(tmp_path, model.state_dict(), model.state_dict(), optimizer.state_dict(), state(step))


def test_a_checkpoint_restores_the_optimizer_so_training_continues_identically(tmp_path):
    model, optimizer = trained_adam()
    path = save(tmp_path, 3, model, optimizer)
    checkpoint = load_checkpoint(path)
    assert checkpoint.step == 3 and checkpoint.state == state(3)
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


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("ema_updates"), "'ema_updates' is missing"),
        (lambda s: s.update(step="3"), "step must be int, got str"),
        (lambda s: s.update(ema_updates=True), "ema_updates must be int, got bool"),
        (lambda s: s.update(grad_scaler=[]), "grad_scaler must be dict or null, got list"),
        (lambda s: s.pop("optimizer"), "'optimizer' is missing"),
        (lambda s: s["optimizer"]["state"].update({"0": {"exp_avg": {"tensor": "state.9.exp_avg"}}}), "do not match"),
    ],
    ids=["missing-key", "string-step", "bool-count", "list-scaler", "no-optimizer", "optimizer-mismatch"],
)
def test_a_state_json_with_a_missing_or_mistyped_field_is_named(tmp_path, edit, message):
    import json

    path = save(tmp_path, 3, *trained_adam())
    values = json.loads((path / "state.json").read_text())
    edit(values)
    (path / "state.json").write_text(json.dumps(values))
    with pytest.raises(ValueError, match=message) as error:
        load_checkpoint(path)
    assert "state.json" in str(error.value) or "optimizer" in str(error.value)


def test_files_swapped_between_roles_or_checkpoints_are_refused(tmp_path):
    model, optimizer = trained_adam()
    three, four = save(tmp_path, 3, model, optimizer), save(tmp_path, 4, model, optimizer)
    (three / "model.safetensors").rename(tmp_path / "model")
    (three / "ema.safetensors").rename(three / "model.safetensors")
    (tmp_path / "model").rename(three / "ema.safetensors")
    with pytest.raises(ValueError, match=r"model.safetensors holds the ema tensors of step 3.*swapped in"):
        load_checkpoint(three)
    (four / "optimizer.safetensors").write_bytes((three / "optimizer.safetensors").read_bytes())
    with pytest.raises(ValueError, match=r"optimizer.safetensors holds the optimizer tensors of step 3, not .* 4"):
        load_checkpoint(four)


def test_a_checkpoint_with_non_finite_weights_is_refused_by_name(tmp_path):
    model, optimizer = trained_adam()
    with torch.no_grad():
        model.bias[1] = float("nan")
    path = save(tmp_path, 3, model, optimizer)
    message = r"model.safetensors holds non-finite values \(in 'bias'\).*earlier checkpoint"
    with pytest.raises(ValueError, match=message):
        load_checkpoint(path)


def test_a_failed_write_leaves_no_partial_checkpoint_and_says_the_previous_one_is_intact(tmp_path):
    """A full disk, simulated by a file-size limit: the write fails with the folder named, its temporary folder is
    removed, and the previous checkpoint is untouched and still the latest."""
    import resource
    import signal

    from ddpm_hf.checkpoint import CheckpointWriteError

    model, optimizer = trained_adam()
    previous = save(tmp_path, 3, model, optimizer)
    files = {p.name: p.read_bytes() for p in previous.iterdir()}
    big = torch.nn.Linear(256, 256)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
    try:
        with pytest.raises(CheckpointWriteError, match=r"checkpoint-0000004 \(.*File too large.*\); the previous "
                                                       r"checkpoint checkpoint-0000003 is intact"):  # fmt: skip
            save_checkpoint(tmp_path, big.state_dict(), big.state_dict(), optimizer.state_dict(), state(4))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-0000003"]
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == files
    assert latest_checkpoint(tmp_path) == previous
