"""Training images prepared once per machine: decoded to uint8 at the model's resolution into one file that every
process of the machine maps into memory, and that later runs and resumed runs reuse.

Why one memory-mapped file of decoded rows (measured with `benchmarks/data_throughput.py` on a busy 2-core CPU):

* memory: a process holds the rows of its batch and an index of a few bytes per image, not the data set (LSUN
  bedroom at 256 px is 555 GiB); the file's pages live in the operating system's page cache, shared by all the
  processes of the machine, and are dropped, not swapped out, under memory pressure;
* speed: gathering batches of 128 random rows of a 50,000×3×32×32 file that the page cache holds is as fast as from
  a tensor in memory (218,000 against 239,000 images/s with `images[rows]`, 1,256,000 against 1,252,000 with
  `index_select`), and at 256 px one process gathers 5,000 images/s (58,000 with `index_select`), far more than a
  GPU trains on;
* decoding once: decoding and resizing every image at every epoch instead (a DataLoader over `datasets`' table)
  would cost the preparation's CPU time at every epoch, about 1/530 s of a core per 256-px image (from 341×256
  JPEG files), ten times the gather's cost.

The file: `<cache>/prepared/<dataset>-<split>-<res>px-<c>ch-<crop|squash>-<hash>.u8`, where `<cache>` is
`cache_dir` if given (`--cache-dir`), else `ddpm_hf.inception.default_cache_dir()` (as the FID reference statistics),
and `<hash>` is 16 hex digits of the SHA-256 of its key: the dataset (a folder's path, a Hub name or the built-in
shapes), its fingerprint (`datasets`' `_fingerprint`, which changes with its content; for a plain image folder a
hash of every file's name, size and modification time), the split, the image column, the number of images, the
resolution, the channels, the centre crop and `ddpm_hf.data.PREPARATION`. It starts with one line of JSON holding
the key and the shape (N, C, H, W), padded to a multiple of 4096 bytes, followed by the rows, N·C·H·W bytes.

Writing: under a temporary name, in the same folder; the rows first, decoded by worker processes that each write a
contiguous range of rows straight into the file, then the header, then `fsync` and an atomic rename. A reader takes
the file only when its header holds the same key and its size is the header plus N·C·H·W bytes, so a partly written,
foreign or truncated file is never used: it is prepared again. A bad image stops the preparation with the one-line
message of `ddpm_hf.data.decode_row` (the row, and the file when known; with several workers, the first bad row that
one of them meets); its temporary file is removed.

Who prepares: each process computes the key (a folder listing or a `datasets` load, seconds), then takes an
exclusive `flock` on `<file>.lock`. The local main process of each machine takes it first (before the `wait`
barrier that every process passes); the others block on the lock, not on a collective operation (NCCL gives up on a
barrier after 10 minutes, while a large data set takes longer to prepare), and find the file ready when they get it.
The lock also serialises separate runs that share a cache folder, and machines that share one over NFS: the first
prepares, the others reuse. Whoever holds the lock and finds no usable file prepares it, so a failure of the local
main process cannot leave the others waiting. Machines prepare their copies at the same time, and the first
collective operation of training waits for the slowest: a machine that must prepare a copy the others already have
makes them wait that long (prepare it beforehand there if that exceeds the process group's timeout).
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import math
import multiprocessing
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .data import BUILTIN_SHAPES, PREPARATION, ImageData, SplitRows, check_channels, split_rows
from .inception import default_cache_dir

__all__ = ["prepared_images", "prepared_file", "read_prepared"]

_ALIGNMENT = 4096  # the header's size is a multiple of it, so that the rows start on a page
_IMAGES_PER_WORKER = 256  # the fewest images worth a worker process
_CHUNK = 64  # rows a worker decodes between progress reports


def _key(rows: SplitRows, split: str, resolution: int, channels: int, center_crop: bool) -> dict[str, Any]:
    return {
        "source": rows.source,
        "fingerprint": rows.fingerprint,
        "split": split,
        "column": rows.column,
        "num_images": rows.count,
        "resolution": resolution,
        "channels": channels,
        "center_crop": center_crop,
        "preparation": PREPARATION,
    }


def _shape(key: dict[str, Any]) -> tuple[int, int, int, int]:
    return key["num_images"], key["channels"], key["resolution"], key["resolution"]


def prepared_file(cache_root: Path, key: dict[str, Any]) -> Path:
    """Where the images of `key` are prepared under `cache_root` (see the module docstring)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(key["source"]).name or key["source"]).strip("_")
    split = re.sub(r"[^A-Za-z0-9._-]+", "_", key["split"])
    crop = "crop" if key["center_crop"] else "squash"
    name = f"{slug}-{split}-{key['resolution']}px-{key['channels']}ch-{crop}-{digest}.u8"
    return cache_root / "prepared" / name


def _header(key: dict[str, Any]) -> bytes:
    line = json.dumps({"key": key, "shape": list(_shape(key))}, sort_keys=True) + "\n"  # ASCII: ensure_ascii
    return line.encode().ljust(-(-len(line) // _ALIGNMENT) * _ALIGNMENT, b" ")


def read_prepared(path: Path, key: dict[str, Any]) -> torch.Tensor | None:
    """The rows of the prepared file `path` as a uint8 tensor (N, C, H, W) mapped from it, or None if the file is
    missing, holds another key or has not the size its header says (it was not completely written)."""
    try:
        with open(path, "rb") as handle:
            header = json.loads(handle.readline(1 << 20))
        size = path.stat().st_size
    except (OSError, ValueError):
        return None
    expected = _header(key)
    if header != json.loads(expected) or size != len(expected) + math.prod(_shape(key)):
        return None
    # copy-on-write: the pages are the page cache's, shared by every process; a write would stay in this process
    rows = np.memmap(path, dtype=np.uint8, mode="c", offset=len(expected), shape=_shape(key))
    return torch.from_numpy(rows)


class _Lock:
    """An exclusive `flock` on `<file>.lock` (the lock file is left in place: removing it would race with a process
    that has just opened it)."""

    def __init__(self, file: Path):
        self.handle = open(file.with_name(file.name + ".lock"), "a")  # noqa: SIM115 - closed by `release`

    def acquire(self, blocking: bool = True) -> bool:
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            return False
        return True

    def release(self) -> None:
        self.handle.close()


def prepared_images(
    source: str | None,
    split: str,
    column: str | None,
    resolution: int,
    channels: int,
    center_crop: bool = True,
    cache_dir: str | os.PathLike | None = None,
    num_images: int | None = None,
    *,
    is_local_main: bool = True,
    wait: Callable[[], None] | None = None,
    show_progress: bool = True,
    workers: int | None = None,
) -> ImageData:
    """The images of a split (its first `num_images`), prepared as `ddpm_hf.data.prepare_image` does, mapped from
    their prepared file: read if it is there, else prepared now (see the module docstring).

    Args:
        is_local_main: this is the local main process of its machine, which prepares the file.
        wait: a barrier that every process of the launch calls once (`Accelerator.wait_for_everyone`); none for one
            process.
        show_progress: show the preparation's progress bar, and say which file is read or was written.
        workers: processes that decode (default: the CPUs this process may use, at most one per 256 images).

    Raises:
        ValueError: `channels` is not 1 or 3, the data set cannot be loaded or an image cannot be read (what
            `ddpm_hf.data` raises), before any training.
        OSError: the cache folder cannot be written (a full disk is found before decoding starts).
    """
    check_channels(channels)
    rows = split_rows(source, split, column, resolution, num_images, None if cache_dir is None else str(cache_dir))
    key = _key(rows, split, resolution, channels, center_crop)
    path = prepared_file(Path(cache_dir or default_cache_dir()), key)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = _Lock(path)
    try:
        first = is_local_main and lock.acquire(blocking=False)
        if wait is not None:
            wait()  # the others block on the lock from here on, while the local main process prepares
        if not first:
            lock.acquire()
        images = read_prepared(path, key)
        if images is None:
            images = _prepare(path, key, rows, _worker_count(rows.count, workers), show_progress)
        elif is_local_main and show_progress:
            tqdm.write(f"Prepared images: reusing {path}", file=sys.stderr)
    finally:
        lock.release()
    return ImageData(images=images, source=source or BUILTIN_SHAPES, split=split, column=rows.column, file=path)


def _worker_count(num_images: int, requested: int | None) -> int:
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1  # the workers inherit the data set by forking; elsewhere this process decodes alone
    if requested is None:
        available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        requested = min(available, num_images // _IMAGES_PER_WORKER)
    return max(1, min(requested, num_images))


def _prepare(path: Path, key: dict[str, Any], rows: SplitRows, workers: int, show_progress: bool) -> torch.Tensor:
    """Decode `rows` into a temporary file, then give it its header and its name (the lock is held)."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a preparation that was killed
        stale.unlink(missing_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    header, started = _header(key), time.perf_counter()
    try:
        _allocate(temporary, len(header) + math.prod(_shape(key)))
        with tqdm(total=rows.count, desc=f"Preparing the {key['split']} split", unit="img",
                  disable=not show_progress) as progress:  # fmt: skip
            bounds = [rows.count * i // workers for i in range(workers + 1)]
            _decode_spans(temporary, len(header), key, rows, list(zip(bounds[:-1], bounds[1:], strict=True)), progress)
        with open(temporary, "r+b") as handle:
            handle.write(header)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    if show_progress:
        rate = rows.count / max(time.perf_counter() - started, 1e-9)
        tqdm.write(f"Prepared {path} ({rows.count:,} images, {rate:,.0f} img/s)", file=sys.stderr)
        _mention_older_copies(path)
    return read_prepared(path, key)


def _mention_older_copies(path: Path) -> None:
    """Say how much disk the other prepared files of a data set of this name and these settings take (earlier
    versions of it, as a rule): they are kept, since a run elsewhere may still map one, and are the user's to delete."""
    prefix = path.name[: path.name.rindex("-") + 1]  # the name without the key's hash
    others = [file for file in path.parent.glob(f"{glob.escape(prefix)}*.u8") if file != path]
    if others:
        size = sum(file.stat().st_size for file in others) / 2**30
        tqdm.write(f"{len(others)} other prepared file(s) named {prefix}*.u8 ({size:.2f} GiB) remain in "
                   f"{path.parent}, from an earlier version of this data set or another of its name: delete them "
                   "if no run uses them.", file=sys.stderr)  # fmt: skip


def _allocate(file: Path, size: int) -> None:
    """Create `file` with `size` bytes reserved on disk: a full disk fails here with an OSError naming the file, not
    later as a SIGBUS in a worker that writes through its mapping."""
    with open(file, "wb") as handle:
        try:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(handle.fileno(), 0, size)
            else:
                handle.truncate(size)
        except OSError as error:
            raise OSError(error.errno, f"Cannot reserve {size:,} bytes for prepared images", str(file)) from None


def _decode_span(file: Path, offset: int, key: dict[str, Any], rows: SplitRows, span: tuple[int, int],
                 report: Callable[[int], None]) -> None:  # fmt: skip
    """Decode rows [start, stop) into `file`, calling `report(n)` after every `_CHUNK` rows."""
    out = np.memmap(file, dtype=np.uint8, mode="r+", offset=offset, shape=_shape(key))
    resolution, channels, center_crop = key["resolution"], key["channels"], key["center_crop"]
    for first in range(span[0], span[1], _CHUNK):
        last = min(first + _CHUNK, span[1])
        out[first:last] = rows.decode(range(first, last), resolution, channels, center_crop).numpy()
        report(last - first)
    out.flush()


def _decode_spans(file: Path, offset: int, key: dict[str, Any], rows: SplitRows, spans: list[tuple[int, int]],
                  progress: tqdm) -> None:  # fmt: skip
    """Decode each span of rows in a forked worker process (in this one when there is one span); the first error a
    worker raises is raised here, once every worker has stopped."""
    if len(spans) == 1:
        return _decode_span(file, offset, key, rows, spans[0], progress.update)
    context = multiprocessing.get_context("fork")
    done, errors = context.Value("q", 0), context.SimpleQueue()
    workers = [context.Process(target=_worker, args=(file, offset, key, rows, span, done, errors), daemon=True)
               for span in spans]  # fmt: skip
    for worker in workers:
        worker.start()
    try:
        while any(w.is_alive() for w in workers) and not any(w.exitcode for w in workers):
            time.sleep(0.1)
            progress.update(done.value - progress.n)
    finally:
        for worker in workers:
            worker.terminate()
            worker.join()
    failed = [w.exitcode for w in workers if w.exitcode]
    if failed and not errors.empty():
        raise errors.get()
    if failed:  # killed: by the out-of-memory killer, say
        raise OSError(f"A worker process preparing {file} ended with exit status {failed[0]}.")
    progress.update(done.value - progress.n)


def _worker(file: Path, offset: int, key: dict[str, Any], rows: SplitRows, span: tuple[int, int],
            done: Any, errors: Any) -> None:  # fmt: skip
    """A forked worker: decode `span`, counting decoded rows in `done`; on failure put the error in `errors`."""

    def report(count: int) -> None:
        with done.get_lock():
            done.value += count

    try:
        _decode_span(file, offset, key, rows, span, report)
    except Exception as error:  # noqa: BLE001 - passed to the parent, which raises it
        try:
            errors.put(error)
        except Exception:  # noqa: BLE001 - an error that does not pickle goes as its message
            errors.put(RuntimeError(" ".join(str(error).split())))
        sys.exit(1)
