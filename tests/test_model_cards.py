"""Specification of the model card of a published pipeline (`ddpm_hf.model_card`, template in `ddpm_hf/templates/`).

* Its metadata is what the Hub needs to list and load the model (`library_name: diffusers`, `pipeline_tag:
  unconditional-image-generation`, tags, license, the training dataset when it is a Hub dataset), and passes the
  checks `huggingface_hub` can make offline (strict parsing, `model-index`, a round trip through the text).
* An evaluation report becomes `model-index` results (FID, IS, bits/dim, whichever are present) and a table.
* The text has usage snippets for `ddpm_hf.DDPMPipeline` and plain `diffusers.DDPMPipeline`, the model, the training
  configuration and summary, and the paper's citation.
* A pipeline without a training summary or evaluation still gets a valid card, from its configuration alone.
* No local path (output or cache folders, a local dataset, statistics or weights files) is published.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from huggingface_hub import EvalResult, ModelCard, metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results

import ddpm_hf
from ddpm_hf.model_card import TAGS, check_model_card, evaluation_results, hub_dataset_id, model_card, template
from ddpm_hf.training_config import TrainingConfig

REPO_ID = "someone/ddpm-cifar10"
UNET_CONFIG = ddpm_hf.unet_config("ddpm-cifar10")
SCHEDULER_CONFIG = dict(ddpm_hf.DDPMScheduler().config)
LOCAL = "/home/someone/private-runs"  # a local path prefix that must never reach a card

REPORT = {
    "pipeline": f"{LOCAL}/ddpm/pipeline",
    "metrics": {
        "fid": 3.17,
        "inception_score": 9.46,
        "inception_score_std": 0.11,
        "bits_per_dim": 3.75,
        "bits_per_dim_stderr": 0.01,
        "rate_bits_per_dim": 1.78,
        "distortion_bits_per_dim": 1.97,
        "prior_bits_per_dim": 0.0,
    },
    "sampling": {"num_samples": 50000, "num_inference_steps": 1000, "seed": 0, "variance_type": "fixed_large"},
    "fid": {
        "reference": {
            "dataset": "uoft-cs/cifar10",
            "split": "train",
            "resolution": 32,
            "num_images": 50000,
            "statistics_file": f"{LOCAL}/stats/cifar10-train.npz",
        },
        "extractor": {"file": f"{LOCAL}/weights/pt_inception-2015-12-05.pth", "sha256": "6726825d0af5"},
    },
    "bits_per_dim": {"dataset": "uoft-cs/cifar10", "split": "test", "num_images": 10000},
}


def training_summary(**config_overrides) -> dict:
    """A `training_summary.json` as `ddpm-hf train` writes it, for the paper's CIFAR-10 recipe."""
    config = TrainingConfig(
        preset="ddpm-cifar10",
        dataset="uoft-cs/cifar10",
        unet="ddpm-cifar10",
        output_dir=f"{LOCAL}/ddpm",
        cache_dir=f"{LOCAL}/cache",
    )
    config = dataclasses.replace(config, **config_overrides)
    return {
        "steps": 800_000,
        "resumed_from_step": 0,
        "images_seen": 800_000 * 128,
        "epochs": 2048.0,
        "wall_time_seconds": 99_000.0,
        "final_loss": 0.0312,
        "num_processes": 8,
        "mixed_precision": "bf16",  # what the run's "auto" resolved to
        "speedups": {"bf16": True, "tf32": True, "channels_last": True, "compile": True, "cuda_graphs": True},
        "parameters": 35_746_307,
        "dataset": {"source": config.dataset, "split": "train", "column": "img", "num_images": 50000},
        "pipeline": f"{LOCAL}/ddpm/pipeline",
        "config": config.to_dict(),
    }


def card_of(**kwargs) -> ModelCard:
    return model_card(REPO_ID, UNET_CONFIG, SCHEDULER_CONFIG, **kwargs)


# -------------------------------------------------------------------------------------------------------------
# Metadata
# -------------------------------------------------------------------------------------------------------------


def test_metadata_of_a_trained_pipeline_says_how_the_hub_lists_and_loads_it():
    card = check_model_card(card_of(training_summary=training_summary(), sample_image="samples.png"))
    data = card.data.to_dict()
    assert data["library_name"] == "diffusers"
    assert data["pipeline_tag"] == "unconditional-image-generation"
    assert data["license"] == "apache-2.0"
    assert set(TAGS) <= set(data["tags"]) and {"ddpm", "diffusers:DDPMPipeline", "ddpm-hf"} <= set(data["tags"])
    assert data["datasets"] == ["uoft-cs/cifar10"]
    assert "model-index" not in data  # no evaluation, no results


def test_the_card_written_to_a_file_reads_back_with_huggingface_hubs_metadata_load(tmp_path):
    card = card_of(training_summary=training_summary(), evaluation_report=REPORT)
    card.save(tmp_path / "README.md")
    metadata = metadata_load(tmp_path / "README.md")
    assert metadata == card.data.to_dict()
    assert ModelCard.load(tmp_path / "README.md").data.to_dict() == card.data.to_dict()


def test_the_license_is_the_callers():
    assert check_model_card(card_of(license="mit")).data.license == "mit"


@pytest.mark.parametrize(
    ("source", "listed"),
    [
        ("uoft-cs/cifar10", True),
        ("builtin:shapes", False),  # ddpm-hf's default dataset
        (f"{LOCAL}/images", False),  # a local folder
        ("./images", False),
    ],
)
def test_only_a_hub_dataset_is_listed_in_the_metadata(source, listed):
    card = check_model_card(card_of(training_summary=training_summary(dataset=source)))
    assert card.data.datasets == ([source] if listed else None)
    assert hub_dataset_id(source) == (source if listed else None)


def test_a_local_dataset_that_looks_like_a_repo_id_is_not_listed(tmp_path, monkeypatch):
    (tmp_path / "data" / "faces").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert hub_dataset_id("data/faces") is None


# -------------------------------------------------------------------------------------------------------------
# Evaluation
# -------------------------------------------------------------------------------------------------------------


def test_an_evaluation_report_becomes_model_index_results_for_fid_is_and_bits_per_dim():
    card = check_model_card(card_of(training_summary=training_summary(), evaluation_report=REPORT))
    name, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert name == "ddpm-cifar10"
    by_metric = {r.metric_type: r for r in results}
    assert set(by_metric) == {"fid", "inception_score", "bits_per_dim"}
    assert by_metric["fid"].metric_value == 3.17 and by_metric["fid"].dataset_split == "train"
    assert by_metric["inception_score"].metric_value == 9.46
    assert by_metric["bits_per_dim"].metric_value == 3.75 and by_metric["bits_per_dim"].dataset_split == "test"
    for result in results:
        assert result.task_type == "unconditional-image-generation"
        assert result.dataset_type == "uoft-cs/cifar10"
    assert by_metric["fid"].metric_args == {"num_samples": 50000, "num_inference_steps": 1000}
    assert sorted(card.data.metrics) == ["bits_per_dim", "fid", "inception_score"]


def test_the_evaluation_table_shows_each_metric_with_its_protocol():
    text = str(card_of(evaluation_report=REPORT))
    assert "## Evaluation" in text
    assert (
        "| FID ↓ | 3.17 | 50,000 samples, 1,000 sampling steps; reference statistics of uoft-cs/cifar10 `train`" in text
    )
    assert "| Inception Score ↑ | 9.46 ± 0.11 |" in text
    assert "| NLL (bits/dim) ↓ | ≤ 3.75 ± 0.01 | variational bound on uoft-cs/cifar10 `test` (10,000 images)" in text
    assert "rate 1.78 + distortion 1.97" in text
    assert "sha256 `6726825d0af5`" in text


def test_the_card_names_the_sampler_and_its_network_evaluations():
    sampling = {"num_samples": 5000, "num_inference_steps": 10, "scheduler": "HeunDiscreteScheduler", "nfe": 19}
    text = str(card_of(evaluation_report={**REPORT, "sampling": {**REPORT["sampling"], **sampling}}))
    assert "| FID ↓ | 3.17 | 5,000 samples, 10 sampling steps of `HeunDiscreteScheduler` (NFE 19);" in text
    assert "Samples drawn with `HeunDiscreteScheduler`, 19 network evaluations per image" in text
    assert "the bits/dim bound is that of the DDPM chain the model was trained on" in text
    ddpm = {**sampling, "scheduler": "DDPMScheduler", "num_inference_steps": 1000, "nfe": 1000}
    text = str(card_of(evaluation_report={**REPORT, "sampling": {**REPORT["sampling"], **ddpm}}))
    assert "1,000 sampling steps of `DDPMScheduler` (NFE 1,000)" in text and "Samples drawn by ancestral" in text
    assert "DDIMScheduler.from_config(pipeline.scheduler.config)" in text  # how to sample faster


def test_metrics_missing_from_the_report_are_left_out_of_the_results_and_the_table():
    report = {"metrics": {"fid": 12.5}, "sampling": {"num_samples": 5000}}
    card = check_model_card(card_of(training_summary=training_summary(), evaluation_report=report))
    _, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert [(r.metric_type, r.metric_value) for r in results] == [("fid", 12.5)]
    assert results[0].dataset_type == "uoft-cs/cifar10"  # no reference section: the training dataset
    text = str(card)
    assert "| FID ↓ | 12.50 | 5,000 samples |" in text
    assert "Inception Score" not in text and "bits/dim" not in text


def test_a_report_without_metrics_gives_no_results_and_no_evaluation_section():
    card = check_model_card(card_of(evaluation_report={"metrics": {}, "sampling": {}}))
    assert "model-index" not in card.data.to_dict()
    assert "## Evaluation" not in str(card)


@pytest.mark.parametrize(
    ("source", "dataset_type", "dataset_name"),
    [
        ("builtin:shapes", "ddpm-hf-shapes", "ddpm-hf built-in shapes"),
        (f"{LOCAL}/faces", "faces", "local dataset faces"),
    ],
)
def test_results_on_a_dataset_not_on_the_hub_name_it_without_a_path(source, dataset_type, dataset_name):
    (result,) = evaluation_results({"metrics": {"fid": 30.0}}, default_dataset=source)
    assert (result.dataset_type, result.dataset_name) == (dataset_type, dataset_name)


def test_results_without_any_known_dataset_still_make_a_valid_model_index():
    results = evaluation_results({"metrics": {"bits_per_dim": 4.1}})
    assert len(results) == 1 and isinstance(results[0], EvalResult)
    assert results[0].dataset_type == "unknown"
    check_model_card(card_of(evaluation_report={"metrics": {"bits_per_dim": 4.1}}))


# -------------------------------------------------------------------------------------------------------------
# Text
# -------------------------------------------------------------------------------------------------------------


def test_usage_snippets_load_the_repo_with_ddpm_hf_and_with_plain_diffusers():
    text = str(card_of())
    assert "from ddpm_hf import DDPMPipeline" in text and "from diffusers import DDPMPipeline" in text
    assert text.count(f'DDPMPipeline.from_pretrained("{REPO_ID}")') == 2
    assert "num_inference_steps=1000" in text  # T of the scheduler: also right for pipelines with T ≠ 1000


def test_the_text_has_the_model_training_sample_grid_and_citation():
    text = str(card_of(training_summary=training_summary(), sample_image="samples.png", files=["model_index.json"]))
    assert "# ddpm-cifar10" in text
    assert "![Samples drawn from this pipeline](samples.png)" in text
    assert "| parameters | 35,746,307 |" in text
    assert "| self-attention | at 16×16 |" in text
    assert "| β schedule | linear, β₁ = 0.0001 to β_T = 0.02 |" in text
    assert "| global batch | 128 |" in text and "| optimizer steps | 800,000 |" in text
    assert "| EMA decay | 0.9999 |" in text and "| gradient clipping | global norm 1 |" in text
    assert "| wall time | 27 h 30 min |" in text
    assert "| mixed precision | bf16 |" in text  # as the run resolved it, not the configuration's "auto"
    assert "- `model_index.json`" in text
    assert "@inproceedings{ho2020denoising," in text
    assert '"learning_rate": 0.0002' in text  # the full configuration, in a collapsed section


def test_a_pipeline_without_training_summary_gets_a_valid_card_from_its_configuration():
    tiny = ddpm_hf.unet_config("ddpm-tiny")
    card = check_model_card(model_card("me/tiny", tiny, dict(ddpm_hf.DDPMScheduler(num_train_timesteps=20).config)))
    text = str(card)
    assert "16×16 images" in text and "| diffusion steps T | 20 |" in text and "num_inference_steps=20" in text
    assert "published without a training summary" in text
    assert card.data.datasets is None and "model-index" not in card.data.to_dict()


def test_no_local_path_is_published():
    summary = training_summary(dataset=f"{LOCAL}/images", inception_weights=f"{LOCAL}/weights/inception.pth")
    text = str(card_of(training_summary=summary, evaluation_report=REPORT))
    assert LOCAL not in text and "private-runs" not in text
    assert "a local dataset (images)" in text
    config = json.loads(text.split("```json\n")[1].split("```")[0])
    assert "output_dir" not in config and "cache_dir" not in config
    assert config["dataset"] == "images" and config["inception_weights"] == "inception.pth"


# -------------------------------------------------------------------------------------------------------------
# The offline check
# -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ("library_name: diffusers\npipeline_tag: text-to-image\nlicense: mit", "pipeline_tag"),
        ("pipeline_tag: unconditional-image-generation\nlicense: mit", "library_name"),
        ("library_name: diffusers\npipeline_tag: unconditional-image-generation", "license"),
        ("library_name: diffusers\npipeline_tag: unconditional-image-generation\nlicense: mit\ntags: {a: 1}", "tags"),
        (
            "library_name: diffusers\npipeline_tag: unconditional-image-generation\nlicense: mit\n"
            "model-index:\n- name: x\n  results:\n  - task: {}\n",
            "model.index",
        ),
        ("library_name: [unclosed", "does not parse"),
    ],
)
def test_the_offline_check_rejects_metadata_the_hub_would_not_take(broken, message):
    with pytest.raises(ValueError, match=message):
        check_model_card(f"---\n{broken}\n---\n\n# A card\n")


def test_the_offline_check_rejects_unrendered_template_markup():
    with pytest.raises(ValueError, match="unrendered"):
        check_model_card("---\nlibrary_name: diffusers\n---\n\n# {{ model_name }}\n")


def test_the_template_ships_with_the_package():
    assert "{{ card_data }}" in template() and "ho2020denoising" in template()
