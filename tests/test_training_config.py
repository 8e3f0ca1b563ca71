"""Specification of `ddpm_hf.training_config`: the paper's recipe, precedence of preset, file and command line."""

from __future__ import annotations

import json

import pytest

from ddpm_hf.training_config import TRAINING_PRESETS, TrainingConfig, parse_training_config
from ddpm_hf.unet import unet_config


def test_cifar10_preset_is_the_papers_recipe():
    config = parse_training_config(["--preset", "ddpm-cifar10"])
    assert (config.num_train_timesteps, config.beta_start, config.beta_end, config.beta_schedule) == (
        1000,
        1e-4,
        0.02,
        "linear",
    )
    assert (config.prediction_type, config.loss_type) == ("epsilon", "simple")
    assert (config.learning_rate, config.lr_warmup_steps, config.lr_schedule) == (2e-4, 5000, "constant")
    assert (config.adam_beta1, config.adam_beta2, config.weight_decay) == (0.9, 0.999, 0.0)
    assert (config.train_batch_size, config.max_grad_norm, config.max_train_steps) == (128, 1.0, 800_000)
    assert config.random_flip and config.ema_decay == 0.9999
    assert config.unet == "ddpm-cifar10" and unet_config(config.unet)["dropout"] == 0.1
    assert config.dataset == "uoft-cs/cifar10"


def test_no_options_give_the_quickstart_on_the_builtin_data():
    config = parse_training_config([])
    assert config.preset == "quickstart" and config.dataset is None
    assert config.output_dir == TRAINING_PRESETS["quickstart"]["output_dir"]


def test_the_file_overrides_the_preset_and_the_command_line_overrides_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("preset: ddpm-cifar10\nlearning_rate: 1e-4\ntrain-batch-size: 64\nrandom_flip: false\n")
    config = parse_training_config(["--config", str(path), "--train-batch-size", "32"])
    assert config.preset == "ddpm-cifar10" and config.unet == "ddpm-cifar10"
    assert config.learning_rate == 1e-4  # YAML reads 1e-4 as a string: it is converted to the field's type
    assert config.train_batch_size == 32
    assert config.random_flip is False


def test_json_config_files_and_none_values(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"max_train_steps": 10, "checkpoints_total_limit": None}))
    config = parse_training_config(["--config", str(path), "--max-grad-norm", "none", "--no-random-flip"])
    assert config.max_train_steps == 10 and config.checkpoints_total_limit is None
    assert config.max_grad_norm is None and config.random_flip is False


def test_examples_are_valid_configs():
    from pathlib import Path

    examples = sorted(Path(__file__).parents[1].glob("examples/*.yaml"))
    assert len(examples) >= 2
    for path in examples:
        parse_training_config(["--config", str(path)])


@pytest.mark.parametrize(
    "content, message",
    [
        ("learning_rte: 0.1\n", "learning_rte"),
        ("max_train_steps: many\n", "max_train_steps"),
        ("- a list\n", "mapping"),
        ("a: [unclosed\n", "cannot be parsed"),
    ],
)
def test_bad_config_files_are_refused_naming_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        parse_training_config(["--config", str(path)])


def test_a_missing_config_file_is_refused(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        parse_training_config(["--config", str(tmp_path / "nope.yaml")])


@pytest.mark.parametrize(
    "values, field",
    [
        ({"train_batch_size": 0}, "train_batch_size"),
        ({"train_batch_size": 10, "gradient_accumulation_steps": 3}, "gradient_accumulation_steps"),
        ({"max_train_steps": -5}, "max_train_steps"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"loss_type": "l1"}, "loss_type"),
        ({"prediction_type": "noise"}, "prediction_type"),
        ({"mixed_precision": "fp8"}, "mixed_precision"),
        ({"unet": "ddpm-huge"}, "unet"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"resolution": 0}, "resolution"),
        ({"sample_inference_steps": 2000}, "sample_inference_steps"),
        ({"report_to": "mlflow-ish"}, "report_to"),
        ({"preset": "ddpm-mnist"}, "preset"),
    ],
)
def test_bad_values_fail_naming_the_field(values, field):
    with pytest.raises(ValueError, match=field):
        TrainingConfig(**values)


def test_bad_command_line_values_exit_with_a_usage_error():
    with pytest.raises(SystemExit):
        parse_training_config(["--max-train-steps", "ten"])
