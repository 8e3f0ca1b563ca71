"""The model card (`README.md`) of a pipeline published on the Hub.

The card is rendered from the template `model_cards/ddpm_pipeline.md` (packaged as `ddpm_hf/templates/`) with
`huggingface_hub.ModelCard.from_template`. Its YAML metadata says what the Hub needs to list and load the model
(`library_name: diffusers`, `pipeline_tag: unconditional-image-generation`, tags, license, the training dataset when
it is a Hub dataset) and, when an evaluation report exists, `model-index` results for FID, Inception Score and
bits/dim. The text has usage snippets for `ddpm_hf.DDPMPipeline` and plain `diffusers.DDPMPipeline`, the model's
configuration, the training configuration and summary, the evaluation table and the paper's citation.

Inputs are the pipeline's own configurations (enough for a card of a pipeline pushed without training), and
optionally `training_summary.json` (written by `ddpm-hf train`) and `evaluation/report.json` (written by `ddpm-hf
evaluate`); any key of those may be missing. Local paths (output and cache folders, local datasets, statistics
files) are never published: a local dataset or file is named by its last path component only.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.repocard import REGEX_YAML_BLOCK
from huggingface_hub.repocard_data import model_index_to_eval_results
from huggingface_hub.utils import HFValidationError, validate_repo_id

__all__ = [
    "DEFAULT_LICENSE",
    "TASK",
    "TAGS",
    "model_card",
    "evaluation_results",
    "check_model_card",
    "hub_dataset_id",
]

DEFAULT_LICENSE = "apache-2.0"
TASK = "unconditional-image-generation"
TAGS = ("ddpm", "diffusers", "diffusers:DDPMPipeline", "ddpm-hf", TASK)
REQUIRED_METADATA = {"library_name": "diffusers", "pipeline_tag": TASK}
TEMPLATE_NAME = "ddpm_pipeline.md"
# Configuration fields that hold local paths or run bookkeeping: never published.
_PRIVATE_CONFIG_KEYS = ("output_dir", "cache_dir", "resume")
_VARIANCES = {
    "fixed_small": "σ_t² = β̃_t (the posterior variance)",
    "fixed_large": "σ_t² = β_t",
    "fixed_small_log": "σ_t² = β̃_t (the posterior variance)",
    "fixed_large_log": "σ_t² = β_t",
    "learned": "learned",
    "learned_range": "learned (interpolated between β̃_t and β_t)",
}
_PREDICTIONS = {"epsilon": "the noise ε", "sample": "the clean image x₀", "v_prediction": "the velocity v"}
_LOSSES = {"simple": "L_simple (eq. 14 of the paper)", "vlb": "the variational bound L_vlb"}


def template() -> str:
    """The Jinja template of the card, shipped with the package."""
    return resources.files(__package__).joinpath("templates", TEMPLATE_NAME).read_text(encoding="utf-8")


# -------------------------------------------------------------------------------------------------------------
# Formatting helpers: tolerant of missing or oddly typed values in hand-edited JSON files
# -------------------------------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: Any) -> str | None:
    if value is None:
        return None
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _number(value: Any, digits: int = 2) -> str | None:
    if value is None:
        return None
    return f"{value:.{digits}f}" if _is_number(value) else str(value)


def _short(value: Any) -> str | None:
    """A float the way a config file writes it (2e-04 → 0.0002, 0.9999 → 0.9999)."""
    if value is None:
        return None
    return f"{value:g}" if _is_number(value) else str(value)


def _duration(seconds: Any) -> str | None:
    if not _is_number(seconds):
        return None
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _basename(value: Any) -> str | None:
    return None if value is None else Path(str(value)).name


# -------------------------------------------------------------------------------------------------------------
# Datasets
# -------------------------------------------------------------------------------------------------------------


def hub_dataset_id(source: str | None) -> str | None:
    """`source` if it names a dataset on the Hub (like `"uoft-cs/cifar10"`); None for the built-in shapes
    (`"builtin:..."`), absolute or relative paths and anything that exists on this machine."""
    if not source or ":" in source or source.startswith((".", "/", "~")) or os.path.isabs(source):
        return None
    if Path(source).exists():
        return None
    try:
        validate_repo_id(source)
    except HFValidationError:
        return None
    return source


def _dataset_label(source: str | None) -> str | None:
    """How the card names a dataset: a Hub id as is, a built-in one by its name, a local one by its folder name."""
    if not source:
        return None
    if hub_dataset_id(source):
        return source
    if source.startswith("builtin:"):
        return f"the built-in {source.removeprefix('builtin:')} dataset of ddpm-hf"
    return f"a local dataset ({Path(source).name})"


def _dataset_type_and_name(source: str | None) -> tuple[str, str] | None:
    """The `model-index` identifier and name of a dataset: a Hub id as both; otherwise a short identifier that
    cannot be mistaken for a Hub id (`ddpm-hf-shapes`, a local folder's name) and a descriptive name."""
    if not source:
        return None
    if hub_dataset_id(source):
        return source, source
    if source.startswith("builtin:"):
        name = source.removeprefix("builtin:")
        return f"ddpm-hf-{name}", f"ddpm-hf built-in {name}"
    return Path(source).name, f"local dataset {Path(source).name}"


def _dataset_markdown(source: str | None) -> str | None:
    dataset_id = hub_dataset_id(source)
    if dataset_id:
        return f"[{dataset_id}](https://huggingface.co/datasets/{dataset_id})"
    return _dataset_label(source)


# -------------------------------------------------------------------------------------------------------------
# The tables
# -------------------------------------------------------------------------------------------------------------


def _rows(*rows: tuple[str, str | None]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in rows if value is not None]


def _model_table(
    unet_config: Mapping[str, Any], scheduler_config: Mapping[str, Any], parameters: int | None
) -> list[tuple[str, str]]:
    channels = unet_config.get("block_out_channels")
    size = unet_config.get("sample_size")
    blocks = unet_config.get("down_block_types") or ()
    attention = [f"{size // 2**i}×{size // 2**i}" for i, block in enumerate(blocks) if "Attn" in block and size]
    schedule = scheduler_config.get("beta_schedule", "linear")
    start, end = _short(scheduler_config.get("beta_start")), _short(scheduler_config.get("beta_end"))
    betas = f"linear, β₁ = {start} to β_T = {end}" if schedule == "linear" else schedule
    return _rows(
        ("network", "UNet2DModel (diffusers)"),
        ("parameters", _count(parameters)),
        ("image size", f"{size}×{size}×{unet_config.get('in_channels', 3)}" if size else None),
        ("channels per resolution", ", ".join(map(str, channels)) if channels else None),
        ("residual blocks per resolution", _count(unet_config.get("layers_per_block"))),
        ("self-attention", f"at {', '.join(attention)}" if attention else None),
        ("dropout", _short(unet_config.get("dropout"))),
        ("diffusion steps T", _count(scheduler_config.get("num_train_timesteps"))),
        ("β schedule", betas),
        ("the network predicts", _PREDICTIONS.get(scheduler_config.get("prediction_type", "epsilon"))),
        ("reverse-process variance", _VARIANCES.get(scheduler_config.get("variance_type", "fixed_small"))),
    )


def _optimizer(config: Mapping[str, Any]) -> str | None:
    if config.get("learning_rate") is None:
        return None
    decay = config.get("weight_decay") or 0
    text = f"{'AdamW' if decay else 'Adam'}, learning rate {_short(config['learning_rate'])}"
    text += f", β₁ = {_short(config.get('adam_beta1'))}, β₂ = {_short(config.get('adam_beta2'))}"
    return text + (f", weight decay {_short(decay)}" if decay else "")


def _training_rows(summary: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, str | None]:
    """The training table's values, None where the summary or configuration does not say."""
    dataset = summary.get("dataset") or {}
    rows: dict[str, str | None] = {name: None for name in ("dataset", "optimizer steps", "global batch", "images seen")}
    if dataset.get("source"):
        rows["dataset"] = _dataset_markdown(dataset["source"])
        if dataset.get("split"):
            rows["dataset"] += f", split `{dataset['split']}`"
        if dataset.get("num_images") is not None:
            rows["dataset"] += f", {_count(dataset['num_images'])} images"
    if summary.get("steps") is not None:
        resumed = summary.get("resumed_from_step")
        rows["optimizer steps"] = _count(summary["steps"]) + (f" (resumed at {_count(resumed)})" if resumed else "")
    if config.get("train_batch_size") is not None:
        accumulation = config.get("gradient_accumulation_steps") or 1
        rows["global batch"] = _count(config["train_batch_size"])
        if accumulation != 1:
            rows["global batch"] += f" ({accumulation} accumulated micro-batches)"
    if summary.get("images_seen") is not None:
        rows["images seen"] = _count(summary["images_seen"])
        if _is_number(summary.get("epochs")):
            rows["images seen"] += f" ({summary['epochs']:.1f} epochs)"
    rows["loss"] = _LOSSES.get(config.get("loss_type"), config.get("loss_type"))
    rows["optimizer"] = _optimizer(config)
    if config.get("lr_warmup_steps") is not None:
        warmup = _count(config["lr_warmup_steps"])
        rows["learning-rate schedule"] = f"linear warm-up over {warmup} steps, then {config.get('lr_schedule')}"
    if "max_grad_norm" in config:
        clip = config["max_grad_norm"]
        rows["gradient clipping"] = "none" if clip is None else f"global norm {_short(clip)}"
    if config.get("ema_decay") is not None:
        rows["EMA decay"] = _short(config["ema_decay"]) + (" with warm-up" if config.get("ema_warmup") else "")
    if config.get("random_flip") is not None:
        rows["random horizontal flips"] = "yes" if config["random_flip"] else "no"
    rows["mixed precision"] = summary.get("mixed_precision", config.get("mixed_precision"))  # as resolved, not "auto"
    rows["processes"] = _count(summary.get("num_processes"))
    rows["seed"] = _count(config.get("seed"))
    rows["final loss"] = _number(summary.get("final_loss"), 4)
    rows["wall time"] = _duration(summary.get("wall_time_seconds"))
    return rows


def _training_table(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    config = summary.get("config") if isinstance(summary.get("config"), Mapping) else {}
    return _rows(*_training_rows(summary, config).items())


def _is_local_path(value: Any) -> bool:
    if not isinstance(value, str) or not value or value.startswith("builtin:"):
        return False
    return os.path.isabs(value) or value.startswith((".", "~")) or os.sep in value or Path(value).exists()


def _public_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The training configuration without local paths: output and cache folders dropped, any other local path
    (a dataset folder, a UNet config file, Inception weights) named by its last path component."""
    public = {key: value for key, value in config.items() if key not in _PRIVATE_CONFIG_KEYS}
    for key, value in public.items():
        if _is_local_path(value) and not (key == "dataset" and hub_dataset_id(value)):
            public[key] = _basename(value)
    return public


def _evaluation_table(report: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    metrics = report.get("metrics") or {}
    sampling = report.get("sampling") or {}
    reference = (report.get("fid") or {}).get("reference") or {}
    bpd = report.get("bits_per_dim") or {}
    samples = _count(sampling.get("num_samples"))
    drawn = None
    if samples:
        drawn = f"{samples} samples"
        if sampling.get("num_inference_steps") is not None:
            drawn += f", {_count(sampling['num_inference_steps'])} sampling steps"
        if sampling.get("scheduler") and sampling.get("nfe") is not None:  # reports since samplers (issue 13)
            drawn += f" of `{sampling['scheduler']}` (NFE {_count(sampling['nfe'])})"
    rows: list[tuple[str, str, str]] = []
    if _is_number(metrics.get("fid")):
        against = _dataset_label(reference.get("dataset"))
        if against and reference.get("split"):
            against += f" `{reference['split']}`"
        if against and reference.get("num_images") is not None:
            against += f" ({_count(reference['num_images'])} images)"
        protocol = "; ".join(p for p in (drawn, f"reference statistics of {against}" if against else None) if p)
        rows.append(("FID ↓", _number(metrics["fid"]), protocol))
    if _is_number(metrics.get("inception_score")):
        value = _number(metrics["inception_score"])
        if _is_number(metrics.get("inception_score_std")):
            value += f" ± {_number(metrics['inception_score_std'])}"
        rows.append(("Inception Score ↑", value, drawn or ""))
    if _is_number(metrics.get("bits_per_dim")):
        value = f"≤ {_number(metrics['bits_per_dim'])}"
        if _is_number(metrics.get("bits_per_dim_stderr")):
            value += f" ± {_number(metrics['bits_per_dim_stderr'])}"
        on = _dataset_label(bpd.get("dataset"))
        if on and bpd.get("split"):
            on += f" `{bpd['split']}`"
        if on and bpd.get("num_images") is not None:
            on += f" ({_count(bpd['num_images'])} images)"
        parts = [f"variational bound on {on}" if on else "variational bound"]
        if _is_number(metrics.get("rate_bits_per_dim")) and _is_number(metrics.get("distortion_bits_per_dim")):
            parts.append(
                f"rate {_number(metrics['rate_bits_per_dim'])} + distortion "
                f"{_number(metrics['distortion_bits_per_dim'])}"
            )
        rows.append(("NLL (bits/dim) ↓", value, "; ".join(parts)))
    return rows


def _evaluation_notes(report: Mapping[str, Any]) -> str | None:
    sampling = report.get("sampling") or {}
    extractor = (report.get("fid") or {}).get("extractor") or {}
    notes = []
    scheduler = sampling.get("scheduler") or "DDPMScheduler"
    if scheduler != "DDPMScheduler":
        eta = f", η = {sampling['eta']}" if sampling.get("eta") is not None else ""
        drawn = f"Samples drawn with `{scheduler}`{eta}"
        if sampling.get("nfe") is not None:
            drawn += f", {_count(sampling['nfe'])} network evaluations per image"
        if sampling.get("seed") is not None:
            drawn += f", seed {sampling['seed']}"
        notes.append(drawn + "; the bits/dim bound is that of the DDPM chain the model was trained on.")
    elif sampling.get("seed") is not None or sampling.get("variance_type"):
        drawn = "Samples drawn by ancestral sampling"
        if sampling.get("variance_type"):
            drawn += f" with {_VARIANCES.get(sampling['variance_type'], sampling['variance_type'])}"
        if sampling.get("seed") is not None:
            drawn += f", seed {sampling['seed']}"
        notes.append(drawn + ".")
    if extractor.get("file") or extractor.get("sha256"):
        name = f"`{_basename(extractor['file'])}`" if extractor.get("file") else "the Inception network"
        digest = f" (sha256 `{extractor['sha256']}`)" if extractor.get("sha256") else ""
        notes.append(f"FID and Inception Score use the features of {name}{digest}.")
    return " ".join(notes) or None


# -------------------------------------------------------------------------------------------------------------
# The model-index
# -------------------------------------------------------------------------------------------------------------


def evaluation_results(report: Mapping[str, Any], default_dataset: str | None = None) -> list[EvalResult]:
    """The `model-index` results of an evaluation report: FID, Inception Score and bits/dim, those present.

    Each result names the dataset it was measured against: the report's FID reference or bits/dim dataset, else
    `default_dataset` (the training dataset), else "unknown".
    """
    metrics = report.get("metrics") or {}
    sampling = report.get("sampling") or {}
    reference = (report.get("fid") or {}).get("reference") or {}
    bpd = report.get("bits_per_dim") or {}
    sample_args = {k: sampling[k] for k in ("num_samples", "num_inference_steps") if sampling.get(k) is not None}

    def result(metric_type: str, name: str, value: float, dataset: str | None, split: str | None, args: dict):
        dataset_type, dataset_name = (
            _dataset_type_and_name(dataset) or _dataset_type_and_name(default_dataset) or ("unknown", "unknown")
        )
        return EvalResult(
            task_type=TASK,
            task_name="Unconditional Image Generation",
            dataset_type=dataset_type,
            dataset_name=dataset_name,
            dataset_split=split,
            metric_type=metric_type,
            metric_name=name,
            metric_value=round(float(value), 4),
            metric_args=args or None,
        )

    results = []
    if _is_number(metrics.get("fid")):
        results.append(
            result("fid", "FID", metrics["fid"], reference.get("dataset"), reference.get("split"), sample_args)
        )
    if _is_number(metrics.get("inception_score")):
        dataset, split = reference.get("dataset"), reference.get("split")
        results.append(
            result("inception_score", "Inception Score", metrics["inception_score"], dataset, split, sample_args)
        )
    if _is_number(metrics.get("bits_per_dim")):
        args = {"num_images": bpd["num_images"]} if bpd.get("num_images") is not None else {}
        results.append(
            result(
                "bits_per_dim",
                "NLL (bits/dim, upper bound)",
                metrics["bits_per_dim"],
                bpd.get("dataset"),
                bpd.get("split"),
                args,
            )
        )
    return results


# -------------------------------------------------------------------------------------------------------------
# The card
# -------------------------------------------------------------------------------------------------------------


def model_card(
    repo_id: str,
    unet_config: Mapping[str, Any],
    scheduler_config: Mapping[str, Any],
    *,
    parameters: int | None = None,
    training_summary: Mapping[str, Any] | None = None,
    evaluation_report: Mapping[str, Any] | None = None,
    sample_image: str | None = None,
    files: Sequence[str] = (),
    license: str = DEFAULT_LICENSE,
) -> ModelCard:
    """The model card of a pipeline published as `repo_id`.

    Args:
        repo_id: the Hub repo ("user/name"), used in the usage snippets; its name is the card's title.
        unet_config, scheduler_config: the pipeline's component configurations (`config.json`,
            `scheduler_config.json`).
        parameters: the UNet's parameter count (default: the training summary's, if any).
        training_summary: the content of `training_summary.json`, if the pipeline comes from `ddpm-hf train`.
        evaluation_report: the content of `evaluation/report.json`, if the pipeline was evaluated.
        sample_image: the path in the repo of a sample grid to show (uploaded with the card).
        files: the paths of the files in the repo, listed in the card.
        license: the license identifier of the weights (the Hub's list, e.g. "apache-2.0", "mit", "other").
    """
    summary = dict(training_summary or {})
    report = dict(evaluation_report or {})
    source = (summary.get("dataset") or {}).get("source") or (summary.get("config") or {}).get("dataset")
    dataset_id = hub_dataset_id(source)
    model_name = repo_id.split("/")[-1]
    results = evaluation_results(report, default_dataset=source) if report else []
    card_data = ModelCardData(
        library_name="diffusers",
        pipeline_tag=TASK,
        license=license,
        tags=list(TAGS),
        datasets=[dataset_id] if dataset_id else None,
        metrics=sorted({r.metric_type for r in results}) or None,
        model_name=model_name if results else None,
        eval_results=results or None,
    )
    config = summary.get("config")
    return ModelCard.from_template(
        card_data,
        template_str=template(),
        model_name=model_name,
        repo_id=repo_id,
        resolution=unet_config.get("sample_size"),
        num_train_timesteps=scheduler_config.get("num_train_timesteps", 1000),
        dataset_description=_dataset_markdown(source),
        sample_image=sample_image,
        model_table=_model_table(unet_config, scheduler_config, parameters or summary.get("parameters")),
        training_table=_training_table(summary) if summary else [],
        training_config=json.dumps(_public_config(config), indent=2) if isinstance(config, Mapping) else None,
        evaluation_table=_evaluation_table(report) if report else [],
        evaluation_notes=_evaluation_notes(report) if report else None,
        files=sorted(files),
    )


def check_model_card(card: ModelCard | str) -> ModelCard:
    """Check a card offline as the Hub's metadata check would, and return it parsed again from its text.

    The metadata must parse (strictly: an invalid `model-index` is an error), say `library_name: diffusers` and
    `pipeline_tag: unconditional-image-generation`, have a license, tags and datasets of the right types, a
    `model-index` that `huggingface_hub` reads back into results, and survive a round trip through the card's text.

    Raises:
        ValueError: naming the first problem found.
    """
    text = str(card)
    if "{{" in text or "{%" in text:
        raise ValueError("The model card has unrendered template markup ({{ or {%).")
    match = REGEX_YAML_BLOCK.search(text)
    if match is None:
        raise ValueError("The model card has no metadata block (--- YAML --- at its top).")
    try:
        raw = yaml.safe_load(match.group(2))
        parsed = ModelCard(text)
    except Exception as error:  # yaml.YAMLError, ValueError from the metadata classes
        raise ValueError(f"The model card's metadata does not parse: {error}") from error
    if not isinstance(raw, dict):
        raise ValueError("The model card's metadata is not a YAML mapping.")
    data = parsed.data.to_dict()
    for key, expected in REQUIRED_METADATA.items():
        if data.get(key) != expected:
            raise ValueError(f"The model card's metadata must say {key}: {expected}, not {data.get(key)!r}.")
    if not isinstance(data.get("license"), str) or not data["license"]:
        raise ValueError("The model card's metadata has no license.")
    for key in ("tags", "datasets", "metrics"):
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise ValueError(f"The model card's metadata field {key} must be a list of strings, got {value!r}.")
    if "model-index" in data:
        try:
            model_index_to_eval_results(data["model-index"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"The model card's model-index is invalid: {error!r}.") from error
    if ModelCard(str(parsed)).data.to_dict() != data:
        raise ValueError("The model card's metadata changes when the card is written and read again.")
    return parsed
