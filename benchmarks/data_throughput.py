"""Throughput of the training data path alone, no model: preparing the images (`ddpm_hf.image_cache`: decode,
resize, crop, write) in images/s per worker process, and reading training batches from the prepared file (the rows
of `global_batch_indices` gathered into one uint8 batch: what the host does for each batch when training on a GPU,
which scales and flips the batch itself) in images/s per training process, one process alone and P at once; at
32 px (CIFAR-10's size) and at 256 px (the paper's LSUN and CelebA-HQ), from the page cache.

A machine starves its GPUs when its processes gather fewer images a second than the GPUs train on
(`train_throughput.py` measures that); preparation runs once per machine, so its rate says how long the first run
waits. At 32 px the gather from the file is also timed against the same rows held in memory (the path before the
prepared file), with `images[rows]` (what training did) and `images.index_select(0, rows)` (what it does).

    python benchmarks/data_throughput.py                    # 50,000 rows at 32 px, 2,000 images at 256 px
    python benchmarks/data_throughput.py --processes 8 --images-256 20000
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL.Image
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import record_header, write_record  # noqa: E402

from ddpm_hf.data import global_batch_indices  # noqa: E402
from ddpm_hf.image_cache import prepared_images  # noqa: E402


def natural_looking_images(folder: Path, count: int, width: int, height: int, file_format: str) -> Path:
    """`count` smooth random images (bicubic upsampling of 8×8 noise plus grain), which compress and decode like
    photographs rather than like pure noise."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        coarse = PIL.Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((width, height), 3)
        grain = rng.normal(0, 6, (height, width, 3))
        pixels = np.clip(np.asarray(coarse, dtype=np.float64) + grain, 0, 255).astype(np.uint8)
        PIL.Image.fromarray(pixels).save(folder / f"{i:06d}.{file_format}", quality=90)
    return folder


def preparation_rate(folder: Path, resolution: int, workers: int) -> float:
    """Images/s of preparing `folder` at `resolution` with `workers` processes, into a fresh cache folder."""
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        data = prepared_images(str(folder), "train", None, resolution, 3, cache_dir=cache, show_progress=False,
                               workers=workers)  # fmt: skip
        return len(data.images) / (time.perf_counter() - started)


def gather_rate(images: torch.Tensor, batch: int, rank: int, processes: int, seconds: float,
                gather: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> float:  # fmt: skip
    """Images/s of one training process `rank` of `processes` reading its share of consecutive global batches."""
    share, count, step = batch // processes, 0, 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        rows = global_batch_indices(len(images), batch, seed=0, step=step)[rank * share : (rank + 1) * share]
        gather(images, rows)
        count, step = count + share, step + 1
    return count / (time.perf_counter() - started)


def _child(images, batch, rank, processes, seconds, gather, results) -> None:
    torch.set_num_threads(1)
    results.put(gather_rate(images, batch, rank, processes, seconds, gather))


def parallel_gather_rates(images: torch.Tensor, batch: int, processes: int, seconds: float,
                          gather: Callable) -> list[float]:  # fmt: skip
    """Images/s of each of `processes` forked processes reading their shares of the same batches at once."""
    context = multiprocessing.get_context("fork")
    results = context.SimpleQueue()
    children = [context.Process(target=_child, args=(images, batch, rank, processes, seconds, gather, results))
                for rank in range(processes)]  # fmt: skip
    for child in children:
        child.start()
    rates = [results.get() for _ in children]
    for child in children:
        child.join()
    return rates


def index(images: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return images[rows]


def index_select(images: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return images.index_select(0, rows)


def measure(resolution: int, count: int, batch: int, processes: int, seconds: float, work: Path) -> dict:
    size = (32, 32) if resolution == 32 else (resolution * 4 // 3, resolution)  # LSUN: shorter side 256, 4:3
    source = natural_looking_images(work / f"source{resolution}", count, *size, "png" if resolution == 32 else "jpg")
    print(f"{resolution} px: {count:,} {size[0]}×{size[1]} source images", file=sys.stderr)
    workers = min(processes, max(1, count // 256))
    result = {
        "resolution": resolution,
        "images": count,
        "batch": batch,
        "prepare_images_per_second_one_worker": preparation_rate(source, resolution, 1),
        "prepare_workers": workers,
        "prepare_images_per_second": preparation_rate(source, resolution, workers),
    }
    mapped = prepared_images(str(source), "train", None, resolution, 3, cache_dir=work / "cache", show_progress=False)
    mapped.images.sum()  # into the page cache: the warm case, as on the second epoch of a data set that fits in it
    candidates = {"file, images[rows]": (mapped.images, index), "file, index_select": (mapped.images, index_select)}
    if resolution == 32:
        in_memory = mapped.images.clone()
        candidates |= {"memory, images[rows]": (in_memory, index), "memory, index_select": (in_memory, index_select)}
    result["gather_one_process"] = {
        name: gather_rate(images, batch, 0, 1, seconds, gather) for name, (images, gather) in candidates.items()
    }
    rates = parallel_gather_rates(mapped.images, batch, processes, seconds, index_select)  # as training
    result["gather_processes"] = processes
    result["gather_per_process_images_per_second"] = rates
    result["gather_total_images_per_second"] = sum(rates)
    return result


def print_table(results: list[dict]) -> None:
    for r in results:
        per_worker, workers = r["prepare_images_per_second_one_worker"], r["prepare_workers"]
        print(f"\n{r['resolution']} px, {r['images']:,} images, global batch {r['batch']}")
        total = r["prepare_images_per_second"]
        print(f"  prepare: {per_worker:,.0f} img/s with one worker; with {workers}: {total:,.0f} img/s, "
              f"{total / workers:,.0f} a worker")  # fmt: skip
        for name, rate in r["gather_one_process"].items():
            print(f"  gather, one process, {name}: {rate:,.0f} img/s")
        rates = r["gather_per_process_images_per_second"]
        print(f"  gather, {r['gather_processes']} processes at once, index_select: {min(rates):,.0f}–"
              f"{max(rates):,.0f} img/s each, {sum(rates):,.0f} img/s in all")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images-32", type=int, default=50_000, help="rows at 32 px (default: CIFAR-10's 50,000)")
    parser.add_argument("--images-256", type=int, default=2_000, help="images at 256 px (default: 2,000)")
    parser.add_argument("--processes", type=int, default=len(os.sched_getaffinity(0)),
                        help="training processes and preparation workers (default: the CPUs)")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=3.0, help="time of each gather measurement (default: 3)")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/data_throughput.json"))
    arguments = parser.parse_args()
    torch.set_num_threads(1)  # one thread a process, as `accelerate launch` sets for several
    with tempfile.TemporaryDirectory() as work:
        results = [
            measure(32, arguments.images_32, 128, arguments.processes, arguments.seconds, Path(work)),
            measure(256, arguments.images_256, 64, arguments.processes, arguments.seconds, Path(work)),
        ]
    print_table(results)
    write_record({**record_header("data_throughput", torch.device("cpu")), "results": results}, arguments.output)


if __name__ == "__main__":
    main()
