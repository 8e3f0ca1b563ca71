"""Sample quality against cost, per sampler: NFE, wall time per image, FID by `ddpm-hf evaluate`, and on the built-in
shapes the shape detector's clean rate.

    python benchmarks/sampler_quality.py outputs/quickstart/pipeline --num-samples 256 \
        --inception-weights ../shared/data/inception/fid_inception_v3_2015-12-05_torchscript.pt        # CPU
    python benchmarks/sampler_quality.py outputs/ddpm-cifar10/pipeline --num-samples 10000 --batch-size 1000 \
        --reference-num-images 50000                                                                   # GPU

Each row is one sampler and step count (`--rows` picks some by label; the default: DDPM 1000 and respaced 100/50,
DDIM 100/50/20/10, DPM-Solver++ 20/10, UniPC 10, Euler and Heun 50/20). For each:

1. the N samples are drawn into `OUT/<label>/samples` by `ddpm_hf.sampling.generate_samples`, what `ddpm-hf sample`
   and `ddpm-hf evaluate` call: image i starts from the same x_T under every sampler (seed, i). The drawing is timed
   (wall, the PNG writing included): seconds per image;
2. `ddpm-hf evaluate --metrics fid --no-figures` on that folder, which finds the samples there (their manifest
   matches) and computes the FID against the training split (its statistics cached after the first row);
3. on the built-in shapes, the fraction of samples in which `ddpm_hf.shapes.detect_shape` sees a clean shape.

FID from a few hundred samples is biased upwards (and by more the fewer samples) but the bias is the same for every
row of one run: compare rows, not runs with another N. Prints a table and writes JSON (`--output`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from common import record_header, synchronize, write_record

from ddpm_hf.acceleration import Speedups
from ddpm_hf.data import BUILTIN_SHAPES
from ddpm_hf.sampling import generate_samples, load_pipeline
from ddpm_hf.shapes import detection_rate


@dataclass(frozen=True)
class Row:
    label: str
    scheduler: str  # a `ddpm_hf.samplers` name
    steps: int
    respace: bool = False
    eta: float | None = None


ROWS = [
    Row("ddpm-1000", "ddpm", 1000),
    Row("ddpm-respaced-100", "ddpm", 100, respace=True),
    Row("ddpm-respaced-50", "ddpm", 50, respace=True),
    *(Row(f"ddim-{steps}", "ddim", steps, eta=0.0) for steps in (100, 50, 20, 10)),
    *(Row(f"dpm-solver++-{steps}", "dpm-solver++", steps) for steps in (20, 10)),
    Row("unipc-10", "unipc", 10),
    *(Row(f"euler-{steps}", "euler", steps) for steps in (50, 20)),
    *(Row(f"heun-{steps}", "heun", steps) for steps in (50, 20)),
]


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pipeline", help="a trained pipeline folder (training_summary.json beside it names its data)")
    parser.add_argument("--num-samples", type=int, default=256, help="N per row (default: 256)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--rows", default=None, help=f"comma-separated labels (default: all of {[r.label for r in ROWS]})"
    )
    parser.add_argument("--inception-weights", default=None, help="the FID Inception file (default: ddpm-hf's search)")
    parser.add_argument("--reference-num-images", type=int, default=None, help="FID against the first N (default: all)")
    parser.add_argument("--work-dir", type=Path, default=Path("benchmarks/results/sampler_quality"))
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/sampler_quality.json"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    arguments = parser.parse_args()
    known = {row.label: row for row in ROWS}
    labels = arguments.rows.split(",") if arguments.rows else list(known)
    unknown = [label for label in labels if label not in known]
    if unknown:
        parser.error(f"unknown rows {unknown}; the rows are {list(known)}")
    arguments.rows = [known[label] for label in labels]
    return arguments


def training_dataset(pipeline_dir: Path) -> str | None:
    """The training data's source, from training_summary.json beside the pipeline (what `ddpm-hf evaluate` reads)."""
    summary = pipeline_dir.resolve().parent / "training_summary.json"
    return json.loads(summary.read_text())["dataset"]["source"] if summary.is_file() else None


def draw(arguments: argparse.Namespace, row: Row, samples_dir: Path, device: torch.device) -> float:
    """Draw the row's N samples (none already on disk: the folder is emptied first); the wall seconds."""
    for stale in samples_dir.glob("*"):
        stale.unlink()
    pipeline = load_pipeline(arguments.pipeline, device, speedups=Speedups(), scheduler=row.scheduler, eta=row.eta)
    pipeline(1, num_inference_steps=min(row.steps, 4))  # warm-up: one-time costs are not the sampler's
    synchronize(device)
    start = time.perf_counter()
    generate_samples(pipeline, arguments.num_samples, samples_dir, 0, arguments.batch_size, row.steps, row.respace,
                     row.eta, show_progress=False)  # fmt: skip
    synchronize(device)
    return time.perf_counter() - start


def evaluate(arguments: argparse.Namespace, row: Row, row_dir: Path) -> dict[str, Any]:
    """`ddpm-hf evaluate --metrics fid` on the row's samples; its report."""
    command = [
        sys.executable, "-m", "ddpm_hf.cli", "evaluate", arguments.pipeline, "--metrics", "fid", "--no-figures",
        "--num-samples", str(arguments.num_samples), "--batch-size", str(arguments.batch_size), "--seed", "0",
        "--output-dir", str(row_dir), "--scheduler", row.scheduler, "--num-inference-steps", str(row.steps),
    ]  # fmt: skip
    command += ["--respace"] if row.respace else []
    command += ["--eta", str(row.eta)] if row.eta is not None else []
    command += ["--inception-weights", arguments.inception_weights] if arguments.inception_weights else []
    command += ["--reference-num-images", str(arguments.reference_num_images)] if arguments.reference_num_images else []
    subprocess.run(command, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return json.loads((row_dir / "report.json").read_text())


def measure(arguments: argparse.Namespace, row: Row, shapes: bool, device: torch.device) -> dict[str, Any]:
    row_dir = arguments.work_dir / row.label
    samples_dir = row_dir / "samples"
    seconds = draw(arguments, row, samples_dir, device)
    drawn = {path.name: path.stat().st_mtime_ns for path in samples_dir.glob("*.png")}
    report = evaluate(arguments, row, row_dir)
    if {path.name: path.stat().st_mtime_ns for path in samples_dir.glob("*.png")} != drawn:
        raise RuntimeError(f"ddpm-hf evaluate drew {samples_dir} again: the FID would not be of the timed samples")
    result = {
        **asdict(row),
        "nfe": report["sampling"]["nfe"],
        "seconds_per_image": seconds / arguments.num_samples,
        "fid": report["metrics"]["fid"],
    }
    if shapes:
        images = [np.asarray(PIL.Image.open(path).convert("RGB")) for path in sorted(samples_dir.glob("*.png"))]
        result["clean_shape_rate"] = detection_rate(images)
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    arguments = parse_arguments()
    device = torch.device(arguments.device)
    dataset = training_dataset(Path(arguments.pipeline))
    shapes = dataset == BUILTIN_SHAPES
    record = {**record_header("sampler_quality", device), "pipeline": arguments.pipeline, "dataset": dataset,
              "num_samples": arguments.num_samples, "rows": []}  # fmt: skip
    for row in arguments.rows:
        record["rows"].append(measure(arguments, row, shapes, device))
        write_record(record, arguments.output)  # after every row: a long run keeps what it measured
    print(f"\n{'sampler':<22}{'NFE':>6}{'s/image':>10}{'FID':>9}" + ("   clean shapes" if shapes else ""))
    for row in record["rows"]:
        clean = f"{row['clean_shape_rate']:>15.1%}" if shapes else ""
        print(f"{row['label']:<22}{row['nfe']:>6}{row['seconds_per_image']:>10.4f}{row['fid']:>9.2f}{clean}")
    print(f"(N = {arguments.num_samples} samples per row, {device}, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
