"""The steps of `benchmarks/gpu_check.sh` that are more than one command, and its final table.

    python benchmarks/gpu_check.py prepare --shared ../shared/data --dest .gpu   # here, once: data and Inception
    python benchmarks/gpu_check.py setup --work W [--dry-run]                   # versions, peak TFLOP/s, data
    python benchmarks/gpu_check.py gpu-tests --work W [--dry-run]               # the GPU tests, as a record
    python benchmarks/gpu_check.py train-resume --work W --launch ... -- ARGS    # train, then resume it
    python benchmarks/gpu_check.py real-data --work W ...                        # a short CIFAR-10 run and its FID
    python benchmarks/gpu_check.py summary --work W --out OUT                    # gpu_check.json and the table

Each step writes its record to `W/records/STEP.json`; `summary` gathers them. Only `setup` and `real-data` import
torch: the others start subprocesses and read files.

**The FID network that travels.** The FID Inception file (87 MB) is too large for the 64 MiB that the GPU machine
receives. `prepare` stores it as float16 (the 94 convolution weights; the batch-norm tensors stay float32), and
splits that archive's bytes in two: the high byte of each float16 (sign, exponent, top mantissa bits), which xz
compresses to about 14 MiB, and the low byte, stored as is (about 21 MiB). `setup` puts the archive back together,
checks its SHA-256, and `real-data` loads it as TorchScript, cast back to float32. Its features differ from the
original's by about 0.2% (mean |Δ| 0.00056 against a mean |feature| of 0.31 on CIFAR-10 images), its FIDs by under
0.05% (141.47 against 141.44 between two sets of 150 CIFAR-10 images): for a check, not for a published number. The
original file is used wherever it is found instead (`../shared/data/inception/` or the ddpm_hf cache).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
INCEPTION_NAME = "fid_inception_v3_2015-12-05_torchscript.pt"
STEPS = ("setup", "gpu_tests", "train_throughput", "train_resume", "sample_throughput", "real_data")
# The GPU tests: CUDA-graph capture against the eager loop and the pipeline with every speed-up against the plain one
# (test_cuda_graphs.py), bf16 and channels-last training steps on the GPU (test_gpu_training.py). All skip on a CPU.
GPU_TESTS = ("tests/test_cuda_graphs.py", "tests/test_gpu_training.py")
GPU_TESTS_SELECTION = "gpu"


def write_json(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(record, indent=2, default=str) + "\n")
    os.replace(temporary, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- The Inception file as float16, split for compression ----------------------------------------------------------


def pack_inception(source: Path, folder: Path) -> dict[str, Any]:
    """Write `folder/{high.xz, low.bin, meta.json}`: the TorchScript archive with float16 convolution weights, its
    even bytes (low bytes of each float16) as is and its odd bytes (high bytes) xz-compressed."""
    import io
    import lzma

    import torch

    module = torch.jit.load(str(source), map_location="cpu").eval()
    for parameter in module.parameters():
        if parameter.ndim >= 2:  # convolution weights; batch-norm vectors (tiny) keep float32
            parameter.data = parameter.data.half()
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    archive = buffer.getvalue()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "high.xz").write_bytes(lzma.compress(archive[1::2], preset=9 | lzma.PRESET_EXTREME))
    (folder / "low.bin").write_bytes(archive[0::2])
    meta = {
        "what": "the FID Inception-v3 TorchScript file with float16 convolution weights (cast back to float32 at load)",
        "source": str(source),
        "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "archive_bytes": len(archive),
        "archive_sha256": sha256_of(archive),
    }
    write_json(folder / "meta.json", meta)
    return meta


def unpack_inception(folder: Path, destination: Path) -> Path:
    """Rebuild the float16 archive that `pack_inception` split, check its SHA-256 and write it to `destination`."""
    import lzma

    meta = json.loads((folder / "meta.json").read_text())
    high = lzma.decompress((folder / "high.xz").read_bytes())
    low = (folder / "low.bin").read_bytes()
    archive = bytearray(len(high) + len(low))
    archive[0::2], archive[1::2] = low, high
    if len(archive) != meta["archive_bytes"] or sha256_of(bytes(archive)) != meta["archive_sha256"]:
        raise ValueError(f"{folder} does not rebuild the archive it describes (size or SHA-256 differs).")
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_bytes(bytes(archive))
    return destination


def load_fid_network(path: Path, device):
    """The FID feature network: the original file through `ddpm_hf.inception.load_inception` (SHA-256 checked), or
    the float16 copy rebuilt by `setup` (its own SHA-256 checked there), cast back to float32."""
    import warnings

    import torch

    from ddpm_hf.inception import INCEPTION_SHA256, file_sha256, load_inception

    if file_sha256(path) == INCEPTION_SHA256:
        return load_inception(path, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location=device).float().eval()


# ---- prepare (here, once) -------------------------------------------------------------------------------------------


def prepare(arguments: argparse.Namespace) -> int:
    """A CIFAR-10 subset (the first N training images, as a `datasets` parquet repository) and the packed Inception."""
    import pyarrow.parquet as pq

    shared, destination = arguments.shared, arguments.dest
    train_files = sorted((shared / "cifar10" / "plain_text").glob("train-*.parquet"))
    if not train_files:
        print(f"no CIFAR-10 training parquet under {shared / 'cifar10' / 'plain_text'}", file=sys.stderr)
        return 1
    table = pq.read_table(train_files[0]).slice(0, arguments.images)  # keeps the `datasets` features metadata
    data = destination / "cifar10" / "plain_text" / "train-00000-of-00001.parquet"
    data.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, data)
    print(f"wrote {data}: {table.num_rows} images, {data.stat().st_size / 2**20:.1f} MiB")
    inception = shared / "inception" / INCEPTION_NAME
    if inception.is_file():
        meta = pack_inception(inception, destination / "inception")
        size = sum(f.stat().st_size for f in (destination / "inception").iterdir())
        print(f"packed {inception} into {destination / 'inception'}: {size / 2**20:.1f} MiB "
              f"(float16 archive {meta['archive_bytes'] / 2**20:.1f} MiB)")  # fmt: skip
    else:
        print(f"no Inception file at {inception}: the GPU check will report no FID", file=sys.stderr)
    return 0


# ---- setup ----------------------------------------------------------------------------------------------------------


def _versions() -> dict[str, str | None]:
    import importlib.metadata

    names = ("torch", "diffusers", "datasets", "accelerate", "huggingface_hub", "safetensors", "numpy", "pyarrow",
             "pandas", "fsspec", "dill", "multiprocess", "pillow", "pytest")  # fmt: skip
    versions: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def measure_peak_tflops(device) -> tuple[float, str]:
    """The best of 3 timings of dense matrix products: bf16 8192³ on CUDA, float32 512³ on the CPU."""
    import torch

    cuda = device.type == "cuda"
    size, dtype, repeats = (8192, torch.bfloat16, 50) if cuda else (512, torch.float32, 20)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(3):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 * repeats / best / 1e12, f"{str(dtype).removeprefix('torch.')} {size}³ matmul"


def make_tiny_dataset(folder: Path, count: int = 64, size: int = 32) -> Path:
    """A CIFAR-10-shaped `datasets` parquet repository of random 32×32 images, for the dry run: an `img` column of PNG
    bytes and a `label` column, with the `datasets` features in the schema's metadata as in the real one (written with
    pyarrow alone: importing `datasets` here would cost seconds of the dry run)."""
    import io

    import numpy as np
    import PIL.Image
    import pyarrow as pa
    import pyarrow.parquet as pq

    generator = np.random.default_rng(0)
    images = []
    for _ in range(count):
        buffer = io.BytesIO()
        PIL.Image.fromarray(generator.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
        images.append({"bytes": buffer.getvalue(), "path": None})
    features = {"img": {"_type": "Image"}, "label": {"names": ["a", "b"], "_type": "ClassLabel"}}
    table = pa.table(
        {
            "img": pa.array(images, type=pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            "label": pa.array([i % 2 for i in range(count)], type=pa.int64()),
        }
    ).replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    path = folder / "plain_text" / "train-00000-of-00001.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return folder


def find_inception(packed: Path, work: Path) -> tuple[Path | None, str]:
    """The FID network to use: the packed float16 copy, else the original file (beside the checkout in
    shared/data/inception, or in the ddpm_hf cache, `$DDPM_HF_CACHE`); and what it is, or why there is none."""
    if (packed / "meta.json").is_file():
        return unpack_inception(packed, work / "inception_fp16.pt"), f"float16 copy rebuilt from {packed}"
    candidates = [REPO.parent / "shared" / "data" / "inception" / INCEPTION_NAME]
    if os.environ.get("DDPM_HF_CACHE"):
        candidates.append(Path(os.environ["DDPM_HF_CACHE"]) / INCEPTION_NAME)
    for candidate in candidates:
        if candidate.is_file():
            return candidate, f"original file {candidate}"
    looked = ", ".join(str(c) for c in [packed, *candidates])
    return None, f"no FID Inception file (looked at {looked})"


def setup(arguments: argparse.Namespace) -> int:
    import torch

    if not arguments.dry_run:
        import ddpm_hf  # noqa: F401  (fails here, not in every later step, if the package cannot be imported)

    work = arguments.work
    device = torch.device("cuda" if torch.cuda.is_available() and not arguments.dry_run else "cpu")
    record: dict[str, Any] = {"dry_run": arguments.dry_run, "device": str(device), "versions": _versions()}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        record["gpu"] = {
            "name": properties.name,
            "memory_gib": properties.total_memory / 2**30,
            "cuda": torch.version.cuda,
            "capability": f"{properties.major}.{properties.minor}",
        }
    elif not arguments.dry_run:
        print("no CUDA GPU: run with --dry-run on a CPU", file=sys.stderr)
        return 1
    record["peak_tflops"], record["peak_measured_with"] = measure_peak_tflops(device)
    if arguments.dry_run:
        dataset = make_tiny_dataset(work / "data" / "tiny")
    else:
        dataset = arguments.dataset
        if not any(dataset.rglob("*.parquet")):
            print(f"no data at {dataset}: run `bash benchmarks/gpu_check.sh --prepare` first", file=sys.stderr)
            return 1
    record["dataset"] = str(dataset)
    inception, record["inception"] = find_inception(arguments.inception, work)
    record["inception_path"] = str(inception) if inception else None
    pyarrow = record["versions"]["pyarrow"]
    if pyarrow and int(pyarrow.split(".")[0]) < 24:
        record["warning"] = f"pyarrow {pyarrow} is older than datasets wants (≥ 24)"
    write_json(work / "records" / "setup.json", record)
    with (work / "setup.env").open("w") as handle:  # read by gpu_check.sh
        handle.write(f"DATASET={dataset}\nINCEPTION={inception or ''}\nPEAK_TFLOPS={record['peak_tflops']!r}\n")
    print(json.dumps(record, indent=2))
    return 0


# ---- gpu_tests ------------------------------------------------------------------------------------------------------


def gpu_tests(arguments: argparse.Namespace) -> int:
    """Run the GPU tests with pytest; record each test's outcome from the JUnit XML report. The dry run does not run
    them (each one skips without CUDA, and starting pytest costs seconds): it checks that the selection still names
    tests, and records them as skipped."""
    if arguments.dry_run:
        import re

        names = []
        for file in GPU_TESTS:
            text = (REPO / file).read_text()
            in_module = GPU_TESTS_SELECTION in Path(file).stem  # -k matches the module's name too
            names += [name for name in re.findall(r"^def (test_\w+)", text, flags=re.M)
                      if in_module or GPU_TESTS_SELECTION in name]  # fmt: skip
        record = {
            "command": f"pytest {' '.join(GPU_TESTS)} -k {GPU_TESTS_SELECTION}",
            "returncode": None,
            "passed": 0,
            "failed": 0,
            "skipped": len(names),
            "tests": [{"name": name, "outcome": "skipped"} for name in names],
            "skip_reason": f"the {len(names)} GPU test functions need a CUDA GPU: not run on the CPU",
        }
        write_json(arguments.work / "records" / "gpu_tests.json", record)
        print("\n".join(names))
        return 0 if names else 1
    junit = arguments.work / "gpu_tests.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junit-xml={junit}",
               *GPU_TESTS, "-k", GPU_TESTS_SELECTION]  # fmt: skip
    print(" ".join(command), flush=True)
    returncode = subprocess.run(command, cwd=REPO).returncode
    tests, counts = [], {"passed": 0, "failed": 0, "skipped": 0}
    if junit.is_file():
        for case in ElementTree.parse(junit).getroot().iter("testcase"):
            outcome = "passed"
            for child in case:
                if child.tag in ("failure", "error"):
                    outcome = "failed"
                elif child.tag == "skipped":
                    outcome = "skipped"
            counts[outcome] += 1
            tests.append({"name": f"{case.get('classname')}.{case.get('name')}", "outcome": outcome,
                          "seconds": float(case.get("time") or 0)})  # fmt: skip
    record: dict[str, Any] = {"command": " ".join(command), "returncode": returncode, **counts, "tests": tests}
    if returncode == 0 and counts["passed"] == 0 and counts["skipped"]:
        record["skip_reason"] = f"the {counts['skipped']} selected tests need a CUDA GPU (all skipped here)"
    write_json(arguments.work / "records" / "gpu_tests.json", record)
    if not tests:
        print("no test ran: the selection matches nothing", file=sys.stderr)
        return 1
    return returncode


# ---- train_resume ---------------------------------------------------------------------------------------------------


def _metrics(folder: Path) -> list[dict[str, Any]]:
    path = folder / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def train_resume(arguments: argparse.Namespace) -> int:
    """`LAUNCH -m ddpm_hf.train ARGS` for `first` steps, then the same with `--resume latest` up to `total` steps:
    the second run must start from the first one's checkpoint and log the steps after it."""
    run_dir = arguments.work / "train_resume"
    base = [*arguments.launch.split(), "-m", "ddpm_hf.train", *arguments.train_args, "--output-dir", str(run_dir)]
    runs = []
    for steps, extra in ((arguments.first, []), (arguments.total, ["--resume", "latest"])):
        command = [*base, "--max-train-steps", str(steps), "--checkpointing-steps", str(arguments.first), *extra]
        print(" ".join(command), flush=True)
        start = time.perf_counter()
        returncode = subprocess.run(command, cwd=REPO).returncode
        runs.append({"command": " ".join(command), "returncode": returncode, "seconds": time.perf_counter() - start})
        if returncode:
            break
    summary = read_json(run_dir / "training_summary.json") or {}
    metrics = [row for row in _metrics(run_dir) if "loss" in row]
    checks = {
        "first_run_checkpoint": (run_dir / "checkpoints" / f"checkpoint-{arguments.first:07d}").is_dir(),
        "resumed_from_first_checkpoint": summary.get("resumed_from_step") == arguments.first,
        "logged_every_window_once": sorted({row["step"] for row in metrics}) == [row["step"] for row in metrics]
        and bool(metrics)
        and metrics[-1]["step"] == arguments.total,
        "pipeline_saved": (run_dir / "pipeline" / "model_index.json").is_file(),
    }
    record = {
        "runs": runs,
        "first_steps": arguments.first,
        "total_steps": arguments.total,
        "checks": checks,
        "losses": [
            {"step": row["step"], "loss": row["loss"], "images_per_second": row["images_per_second"]} for row in metrics
        ],  # fmt: skip
        "mixed_precision": summary.get("mixed_precision"),
        "speedups": summary.get("speedups"),
        "resumed_from_step": summary.get("resumed_from_step"),
    }
    write_json(arguments.work / "records" / "train_resume.json", record)
    failed = [name for name, ok in checks.items() if not ok]
    if any(run["returncode"] for run in runs) or failed:
        print(f"train_resume failed: runs {[run['returncode'] for run in runs]}, checks failed: {failed}",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


# ---- real_data ------------------------------------------------------------------------------------------------------


def real_data(arguments: argparse.Namespace) -> int:
    """Train on real data (the paper's CIFAR-10 recipe, EMA warm-up on) for a number of steps that fits the time
    left, then the FID of the EMA model's samples against the training images."""
    from accelerate import Accelerator

    from ddpm_hf import DDPMPipeline, frechet_distance
    from ddpm_hf.measures import reference_statistics, sample_features
    from ddpm_hf.metrics import feature_statistics
    from ddpm_hf.train import train
    from ddpm_hf.training_config import parse_training_config

    work, started = arguments.work, time.time()
    if arguments.steps is not None:
        steps, planned = arguments.steps, None
    else:  # as many steps as the time left allows, at the trainer's measured speed (train_throughput's record)
        measured = (read_json(work / "records" / "train_throughput.json") or {}).get("results", {})
        images_per_second = measured.get("ddpm_hf", {}).get("images_per_second") or arguments.fallback_images_per_second
        left = arguments.deadline - time.time() - arguments.reserve if arguments.deadline else float("inf")
        seconds = min(arguments.max_train_seconds, max(15.0, left))
        steps = max(50, int(0.9 * images_per_second * seconds / arguments.batch_size))
        planned = {"train_seconds": seconds, "images_per_second": images_per_second}
    output_dir = work / "real_data"
    config = parse_training_config([
        "--preset", "ddpm-cifar10", "--dataset", str(arguments.dataset), "--unet", arguments.unet,
        "--train-batch-size", str(arguments.batch_size), "--max-train-steps", str(steps),
        "--logging-steps", str(max(1, steps // 20)), "--checkpointing-steps", str(steps), "--ema-warmup",
        "--sample-steps", str(steps), "--num-sample-images", str(arguments.grid_images),
        "--sample-inference-steps", str(arguments.fid_inference_steps), "--report-to", "none",
        "--output-dir", str(output_dir),
    ])  # fmt: skip
    print(f"training {steps} steps of batch {arguments.batch_size} on {arguments.dataset}", flush=True)
    summary = train(config)
    trained = time.time()
    losses = [{"step": row["step"], "loss": row["loss"]} for row in _metrics(output_dir) if "loss" in row]
    record: dict[str, Any] = {
        "dataset": str(arguments.dataset),
        "num_images": summary["dataset"]["num_images"],
        "unet": arguments.unet,
        "batch_size": arguments.batch_size,
        "steps": steps,
        "planned": planned,
        "ema_warmup": True,
        "mixed_precision": summary["mixed_precision"],
        "speedups": summary["speedups"],
        "train_seconds": trained - started,
        "losses": losses,
        "first_loss": losses[0]["loss"] if losses else None,
        "final_loss": losses[-1]["loss"] if losses else None,
    }
    if arguments.inception is None:
        record["fid"] = None
        record["fid_skipped"] = arguments.no_fid_reason or "no FID Inception file"
    else:
        accelerator = Accelerator()
        device = accelerator.device
        inception = load_fid_network(arguments.inception, device)
        pipeline = DDPMPipeline.from_pretrained(output_dir / "pipeline").to(device).enable_speedups()
        pipeline.set_progress_bar_config(disable=True)
        T = pipeline.scheduler.config.num_train_timesteps
        features = sample_features(
            pipeline, inception, arguments.fid_samples, accelerator, seed=1, batch_size=arguments.fid_batch_size,
            num_inference_steps=arguments.fid_inference_steps, respace=arguments.fid_inference_steps < T,
        )  # fmt: skip
        resolution, channels = pipeline.unet.config.sample_size, pipeline.unet.config.in_channels
        reference = reference_statistics(
            str(arguments.dataset), "train", resolution, channels, inception, accelerator,
            num_images=arguments.fid_reference_images, cache_dir=work / "fid_cache",
        )  # fmt: skip
        fid = frechet_distance(*feature_statistics(features), reference.mu, reference.sigma)
        record.update(
            fid=fid,
            fid_samples=arguments.fid_samples,
            fid_inference_steps=arguments.fid_inference_steps,
            fid_respaced=arguments.fid_inference_steps < T,
            fid_reference_images=reference.num_images,
            fid_network=arguments.inception_kind or str(arguments.inception),
            fid_seconds=time.time() - trained,
        )
        print(f"FID {fid:.2f} ({arguments.fid_samples} samples, {arguments.fid_inference_steps} steps, "
              f"reference: {reference.num_images} training images)")  # fmt: skip
    if (output_dir / "samples.png").is_file():
        record["samples_grid"] = str(output_dir / "samples.png")
    write_json(work / "records" / "real_data.json", record)
    return 0


# ---- summary: gpu_check.json and the table --------------------------------------------------------------------------


def _rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.1f}k" if value >= 10_000 else f"{value:.0f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def figures_of(step: str, record: dict[str, Any] | None) -> str:
    """The key figures of a step's record, in one short line."""
    if not record:
        return ""
    if step == "setup":
        gpu = record.get("gpu", {}).get("name") or record.get("device")
        warning = f"; {record['warning']}" if record.get("warning") else ""
        return (f"{gpu}, torch {record['versions'].get('torch')}, peak {record['peak_tflops']:.3g} TFLOP/s "
                f"({record['peak_measured_with']}){warning}")  # fmt: skip
    if step == "gpu_tests":
        return f"{record['passed']} passed, {record['failed']} failed, {record['skipped']} skipped"
    if step == "train_throughput":
        ours, theirs = record["results"]["ddpm_hf"], record["results"]["diffusers_reference_loop"]
        return (f"ddpm_hf {_rate(ours['images_per_second'])} img/s (MFU {_percent(ours['mfu'])}), diffusers "
                f"{_rate(theirs['images_per_second'])} img/s (MFU {_percent(theirs['mfu'])}): "
                f"×{record['ratio_ddpm_hf_over_diffusers']:.2f}")  # fmt: skip
    if step == "train_resume":
        losses = record.get("losses") or [{"loss": float("nan")}]
        return (f"{record['first_steps']} steps, resumed from {record.get('resumed_from_step')} to "
                f"{record['total_steps']}; loss {losses[0]['loss']:.3f} → {losses[-1]['loss']:.3f}")  # fmt: skip
    if step == "sample_throughput":
        results, ratios = record["results"], record.get("ratios_over_diffusers", {})
        rates = ", ".join(f"{name} {_rate(r['image_steps_per_second'])}" for name, r in results.items())
        text = f"batch {record['batch_size']}: {rates} image-steps/s (×{ratios.get('ddpm_hf+speedups', 0):.2f})"
        memory = results.get("ddpm_hf+speedups", {}).get("peak_memory_bytes")
        if memory:
            text += f", {memory / 2**20:.0f} MiB"
        largest = record.get("largest_batch_results")
        if largest:
            rates = ", ".join(f"{name} {_rate(r['image_steps_per_second'])}" for name, r in largest["results"].items())
            text += f"; batch {largest['batch_size']}: {rates}"
        deviation = record["speedup_deviation_from_float32"]
        return text + (f"; speed-ups vs float32 over {deviation['steps']} steps: max |Δ| "
                       f"{deviation['max_abs_uint8']}/255, mean {deviation['mean_abs_uint8']:.3f}/255")  # fmt: skip
    if step == "real_data":
        text = (f"{record['steps']} steps × {record['batch_size']} on {record['num_images']} images, loss "
                f"{record['first_loss']:.3f} → {record['final_loss']:.3f}")  # fmt: skip
        if record.get("fid") is not None:
            text += (f", FID {record['fid']:.1f} ({record['fid_samples']} samples, "
                     f"{record['fid_inference_steps']} steps)")  # fmt: skip
        else:
            text += f", no FID: {record.get('fid_skipped')}"
        return text
    return ""


def summary(arguments: argparse.Namespace) -> int:
    """Write `OUT/gpu_check.json` (every step's status, time and record) and print the table, last."""
    work, out = arguments.work, arguments.out
    rows = []
    lines = (work / "steps.tsv").read_text().splitlines() if (work / "steps.tsv").is_file() else []
    # in the order of STEPS: the dry run's lanes end in any order
    for line in sorted(lines, key=lambda line: STEPS.index(line.split("\t")[0])):
        name, status, seconds, note = (line.split("\t") + ["", "", ""])[:4]
        record = read_json(work / "records" / f"{name}.json")
        if status == "ok" and record and record.get("skip_reason"):
            status, note = "skipped", record["skip_reason"]
        try:
            figures = figures_of(name, record) if status == "ok" else note
        except (KeyError, TypeError, ValueError) as error:  # a record without an expected field
            figures = f"(figures unreadable: {error!r})"
        rows.append({"step": name, "status": status, "seconds": float(seconds or 0), "figures": figures,
                     "note": note, "record": record})  # fmt: skip
    failed = [row["step"] for row in rows if row["status"] not in ("ok", "skipped")]
    result = {
        "mode": "dry run (CPU, tiny sizes)" if arguments.dry_run else "GPU",
        "total_seconds": arguments.total_seconds,
        "ok": not failed,
        "failed_steps": failed,
        "steps": rows,
    }
    write_json(out / "gpu_check.json", result)
    print(f"wrote {out / 'gpu_check.json'}")
    width = max([len(row["step"]) for row in rows] + [4])
    print()
    print(f"GPU check, {result['mode']}: {len(rows) - len(failed)} of {len(rows)} steps ok or skipped, "
          f"{len(failed)} failed or timed out, in {arguments.total_seconds:.0f} s")  # fmt: skip
    print(f"{'step':<{width}}  {'status':<8}  {'seconds':>7}  figures")
    for row in rows:
        print(f"{row['step']:<{width}}  {row['status']:<8}  {row['seconds']:7.1f}  {row['figures']}")
    return 0


# ---- command line ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    command = commands.add_parser("prepare", help="write the CIFAR-10 subset and the packed Inception file")
    command.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    command.add_argument("--dest", type=Path, default=REPO / ".gpu")
    command.add_argument("--images", type=int, default=5000)

    command = commands.add_parser("setup", help="versions, peak TFLOP/s, data and the FID network")
    command.add_argument("--work", type=Path, required=True)
    command.add_argument("--dry-run", action="store_true")
    command.add_argument("--dataset", type=Path, default=REPO / ".gpu" / "cifar10")
    command.add_argument("--inception", type=Path, default=REPO / ".gpu" / "inception", help="the packed copy")

    command = commands.add_parser("gpu-tests", help="run the GPU tests and record their outcomes")
    command.add_argument("--work", type=Path, required=True)
    command.add_argument("--dry-run", action="store_true")

    command = commands.add_parser("train-resume", help="train under a launcher, then resume from the checkpoint")
    command.add_argument("--work", type=Path, required=True)
    command.add_argument("--launch", required=True, help="the launcher's command line, before `-m ddpm_hf.train`")
    command.add_argument("--first", type=int, required=True, help="steps of the first run (and its checkpoint)")
    command.add_argument("--total", type=int, required=True, help="steps after the resumed run")
    command.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the training options")

    command = commands.add_parser("real-data", help="a short real-data training run and its FID")
    command.add_argument("--work", type=Path, required=True)
    command.add_argument("--dataset", type=Path, required=True)
    command.add_argument("--unet", default="ddpm-cifar10")
    command.add_argument("--batch-size", type=int, default=128)
    command.add_argument("--steps", type=int, default=None, help="default: what fits before --deadline")
    command.add_argument(
        "--deadline",
        type=float,
        default=float(os.environ.get("GPU_CHECK_DEADLINE") or 0),
        help="when the step must end, Unix time (default: $GPU_CHECK_DEADLINE, which gpu_check.sh sets)",
    )
    command.add_argument("--reserve", type=float, default=90.0, help="seconds kept for start-up, compile and FID")
    command.add_argument("--max-train-seconds", type=float, default=180.0)
    command.add_argument("--fallback-images-per-second", type=float, default=1500.0)
    command.add_argument("--grid-images", type=int, default=256)
    command.add_argument("--inception", type=Path, default=None)
    command.add_argument("--inception-kind", default=None)
    command.add_argument("--no-fid-reason", default=None)
    command.add_argument("--fid-samples", type=int, default=2048)
    command.add_argument("--fid-batch-size", type=int, default=256)
    command.add_argument("--fid-inference-steps", type=int, default=100)
    command.add_argument("--fid-reference-images", type=int, default=None)

    command = commands.add_parser("summary", help="gpu_check.json and the table")
    command.add_argument("--work", type=Path, required=True)
    command.add_argument("--out", type=Path, required=True)
    command.add_argument("--total-seconds", type=float, default=0.0)
    command.add_argument("--dry-run", action="store_true")

    arguments = parser.parse_args(argv)
    if getattr(arguments, "train_args", None) and arguments.train_args[0] == "--":
        arguments.train_args = arguments.train_args[1:]
    handlers = {"prepare": prepare, "setup": setup, "gpu-tests": gpu_tests, "train-resume": train_resume,
                "real-data": real_data, "summary": summary}  # fmt: skip
    return handlers[arguments.command](arguments)


if __name__ == "__main__":
    sys.exit(main())
