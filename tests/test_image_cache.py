"""Specification of `ddpm_hf.image_cache`: training images prepared once per machine into one memory-mapped file,
shared by the machine's processes, reused by later runs, and a training process whose memory does not grow with the
data set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pytest
import torch
from processes import free_port
from test_train import TINY, accelerate_command, checkpoint_tensors, metrics, run, train_command

from ddpm_hf import create_unet, image_cache
from ddpm_hf.data import load_training_images
from ddpm_hf.image_cache import prepared_images

SMALL, LARGE = 300, 6000  # images in the two folders of the memory test


def image_folder(folder: Path, count: int, size: int = 64, seed: int = 0) -> Path:
    """`count` PNG files of random pixels, `size`×`size`, in two subfolders."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        path = folder / f"part{i % 2}" / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        PIL.Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path, compress_level=0)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("folders")
    return {count: image_folder(root / f"images{count}", count) for count in (SMALL, LARGE)}


def prepare(source, cache, resolution=8, channels=3, **options):
    options = {"show_progress": False, **options}
    return prepared_images(str(source), options.pop("split", "train"), None, resolution, channels,
                           cache_dir=cache, **options)  # fmt: skip


def count_calls(monkeypatch, name: str) -> list:
    """Record the thread of each call of `image_cache.<name>` (made in this process) and let it run."""
    calls, original = [], getattr(image_cache, name)

    def counted(*args, **kwargs):
        calls.append(threading.current_thread().name)
        return original(*args, **kwargs)

    monkeypatch.setattr(image_cache, name, counted)
    return calls


# ---- Sources ---------------------------------------------------------------------------------------------------------


def test_a_folder_that_datasets_splits_is_read_through_datasets(tmp_path):
    """A folder with train/ and test/ subfolders is two splits for `datasets`: its test split is prepared as
    `load_training_images` reads it."""
    image_folder(tmp_path / "data" / "train", 4, size=12)
    image_folder(tmp_path / "data" / "test", 3, size=12, seed=1)
    data = prepare(tmp_path / "data", tmp_path / "cache", split="test")
    expected = load_training_images(str(tmp_path / "data"), "test", None, 8, 3, show_progress=False).images
    assert torch.equal(data.images, expected) and data.column == "image"


# ---- Prepared once, reused, keyed, atomic ----------------------------------------------------------------------------


def test_images_are_prepared_once_then_mapped_without_decoding(tmp_path, folders, monkeypatch):
    """Two worker processes decode the rows into the file; a second call maps that file and decodes nothing; the
    rows are those `load_training_images` decodes into memory, and a batch of them is gathered from the mapping."""
    first = prepare(folders[SMALL], tmp_path, workers=2)
    file, stat = first.file, first.file.stat()
    assert file.parent == tmp_path / "prepared" and file.name.startswith("images300-train-8px-3ch-crop-")
    assert sorted(p.name for p in file.parent.iterdir()) == [file.name, file.name + ".lock"]

    def no_decoding(*args):
        raise AssertionError("decoded again")

    expected = load_training_images(str(folders[SMALL]), "train", None, 8, 3, show_progress=False).images
    monkeypatch.setattr("ddpm_hf.data.decode_row", no_decoding)
    again = prepare(folders[SMALL], tmp_path)
    assert (again.file.stat().st_ino, again.file.stat().st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert torch.equal(again.images, expected) and again.images.dtype == torch.uint8
    rows = torch.tensor([299, 0, 17, 17])
    assert torch.equal(again.images[rows], expected[rows])
    assert mapped_file(again.images) == str(again.file)


def mapped_file(tensor: torch.Tensor) -> str | None:
    """The file whose mapping holds `tensor`'s data (from /proc/self/maps), if any."""
    address = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, *rest = line.split(maxsplit=5)
        start, end = (int(bound, 16) for bound in span.split("-"))
        if start <= address < end:
            return rest[4] if len(rest) == 5 else None
    return None


def test_each_preparation_has_its_own_file(tmp_path):
    """Another resolution, channel count, crop, split, number of images or content is another file; the same
    request is the same file."""
    dataset = datasets.Dataset.from_dict({"img": [PIL.Image.new("RGB", (12, 10), (i, 9, 9)) for i in range(6)]})
    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": dataset, "test": dataset.select([0, 1])}).save_to_disk(str(saved))
    folder = image_folder(tmp_path / "folder", 3, size=10)
    files = {
        prepare(saved, tmp_path).file,
        prepare(saved, tmp_path, resolution=4).file,
        prepare(saved, tmp_path, channels=1).file,
        prepare(saved, tmp_path, center_crop=False).file,
        prepare(saved, tmp_path, split="test").file,
        prepare(saved, tmp_path, num_images=5).file,
        prepare(folder, tmp_path).file,
    }
    assert len(files) == 7 and prepare(saved, tmp_path).file in files
    named = {
        "saved-train-8px-3ch-squash",
        "saved-test-8px-3ch-crop",
        "saved-train-4px-3ch-crop",
        "saved-train-8px-1ch-crop",
    }
    assert {f.name.rsplit("-", 1)[0] for f in files} >= named
    touched = folder / "part0" / "00000.png"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))  # a file changed
    assert prepare(folder, tmp_path).file not in files
    assert len(list((tmp_path / "prepared").glob("*.u8"))) == 8


def test_a_changed_data_set_is_prepared_again_and_the_disk_its_old_copy_takes_is_announced(tmp_path, capsys):
    """The earlier copy stays (a run elsewhere may map it) and the user is told its size and where it is."""
    folder = image_folder(tmp_path / "images", 4, size=10)
    first = prepare(folder, tmp_path / "cache", show_progress=True).file
    assert "other prepared file" not in capsys.readouterr().err
    touched = folder / "part0" / "00000.png"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    second = prepare(folder, tmp_path / "cache", show_progress=True).file
    said = capsys.readouterr().err
    assert second != first and first.is_file()
    assert f"1 other prepared file(s) named images-train-8px-3ch-crop-*.u8 (0.00 GiB) remain in {first.parent}" in said


@pytest.mark.parametrize("damage", ["no header", "truncated", "another key"])
def test_a_file_not_completely_written_or_of_another_key_is_prepared_again(tmp_path, monkeypatch, damage):
    source = image_folder(tmp_path / "images", 5, size=10)
    expected = prepare(source, tmp_path / "cache").images.clone()
    file = prepare(source, tmp_path / "cache").file
    if damage == "no header":  # rows written, header not yet
        with open(file, "r+b") as handle:
            handle.write(bytes(4096))
    elif damage == "truncated":
        os.truncate(file, file.stat().st_size - 1)
    else:
        file.write_bytes(prepare(source, tmp_path / "other", center_crop=False).file.read_bytes())
    prepared = count_calls(monkeypatch, "_prepare")
    again = prepare(source, tmp_path / "cache")
    assert len(prepared) == 1 and torch.equal(again.images, expected) and again.file == file


def test_a_bad_image_names_its_row_and_file_and_leaves_nothing_usable(tmp_path):
    """A truncated file among 600 decoded by two workers: one line naming the row and the file, no prepared or
    temporary file left; once the file is repaired, the next call prepares everything."""
    source = image_folder(tmp_path / "images", 600, size=10)
    bad = source / "part1" / "00451.png"  # row 525: the second worker's half
    whole = bad.read_bytes()
    bad.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"^Unreadable image in row 525 of column 'image' \(file .*00451\.png\)"):
        prepare(source, tmp_path / "cache", workers=2)
    assert [p.name for p in (tmp_path / "cache" / "prepared").iterdir() if not p.name.endswith(".lock")] == []
    bad.write_bytes(whole)
    assert len(prepare(source, tmp_path / "cache", workers=2).images) == 600


def test_the_local_main_process_prepares_while_the_others_wait_for_the_file(tmp_path, folders, monkeypatch):
    """Two processes of a machine (here two threads, each with its own lock): the local main one prepares the file
    after the barrier, the other waits on the lock and maps the finished file."""
    prepared = count_calls(monkeypatch, "_prepare")
    barrier, results = threading.Barrier(2), {}

    def process(is_local_main: bool) -> None:
        results[is_local_main] = prepare(folders[SMALL], tmp_path, is_local_main=is_local_main, wait=barrier.wait)

    other = threading.Thread(target=process, args=(False,), name="other")
    other.start()
    process(True)
    other.join(timeout=60)
    assert prepared == [threading.current_thread().name]
    assert results[True].file == results[False].file and torch.equal(results[True].images, results[False].images)


# ---- Training: memory, processes, machines ---------------------------------------------------------------------------


def _process_tree(pid: int) -> list[int]:
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        for children in Path(f"/proc/{tree[-1]}/task").glob("*/children"):
            try:
                todo += [int(child) for child in children.read_text().split()]
            except OSError:  # the process ended meanwhile
                pass
    return tree


def _anonymous_memory(pids: list[int]) -> int:
    """Σ Pss_Anon: each process's anonymous memory, a page shared copy-on-write by n processes counted 1/n each."""
    total = 0
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue
        total += sum(int(line.split()[1]) * 1024 for line in lines if line.startswith("Pss_Anon:"))
    return total


def peak_anonymous_memory(command: list[str]) -> int:
    """Run `command` on at most two CPUs (so that a preparation has as many workers whatever the data set) and
    return the largest Σ Pss_Anon of its process tree, sampled every 20 ms."""
    cpus = sorted(os.sched_getaffinity(0))[:2]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: os.sched_setaffinity(0, cpus))  # fmt: skip
    stderr = []
    reader = threading.Thread(target=lambda: stderr.append(process.stderr.read()))
    reader.start()
    peak = 0
    while process.poll() is None:
        peak = max(peak, _anonymous_memory(_process_tree(process.pid)))
        time.sleep(0.02)
    reader.join()
    assert process.returncode == 0, stderr[0][-3000:]
    return peak


@pytest.mark.skipif(
    not Path("/proc/self/smaps_rollup").is_file() or "Pss_Anon" not in Path("/proc/self/smaps_rollup").read_text(),
    reason="needs Linux's /proc/PID/smaps_rollup with Pss_Anon (Linux 5.x)",
)
def test_the_peak_memory_of_training_does_not_grow_with_the_data_set(tmp_path, folders):
    """Two trainings at 64 px, on 300 and on 6,000 images (74 MiB of decoded rows): the peak anonymous memory of the
    process tree, workers included, differs by less than 24 MiB (run-to-run noise; the index is 8 bytes an image).

    Measured on a busy 2-core machine: 469-478 MiB for 300 images and 465-477 MiB for 6,000. The previous data path
    (every image decoded into one tensor in each process) measured 469-480 MiB and 557-566 MiB: +86 to +88 MiB, which
    fails here.
    Pss_Anon, not RssAnon: the workers that prepare the file are forked, and RssAnon counts every page they share
    with their parent once in each (903 MiB for 6,000 images, with two workers).
    """
    (tmp_path / "unet").mkdir()  # no attention: at 64 px, ddpm-tiny's would dwarf the data
    create_unet("ddpm-tiny", down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2).save_config(
        tmp_path / "unet"
    )
    peaks = {}
    for count, folder in folders.items():
        peaks[count] = peak_anonymous_memory(train_command(
            *TINY, "--unet", str(tmp_path / "unet" / "config.json"), "--resolution", "64", "--max-train-steps", "2",
            "--num-sample-images", "2", "--sample-inference-steps", "2", "--dataset", str(folder),
            "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(tmp_path / f"out{count}"),
        ))  # fmt: skip
    growth = peaks[LARGE] - peaks[SMALL]
    assert growth < 24 * 2**20, f"peak {peaks[SMALL] / 2**20:.0f} → {peaks[LARGE] / 2**20:.0f} MiB"


def prepared_lines(stderr: str) -> list[str]:
    return [line for line in stderr.replace("\r", "\n").splitlines() if line.startswith("Prepared /")]


def test_two_processes_share_one_prepared_copy(tmp_path, folders):
    cache = tmp_path / "cache"
    result = run(accelerate_command(2, *TINY, "--max-train-steps", "2", "--dataset", str(folders[SMALL]),
                                    "--cache-dir", str(cache), "--output-dir", str(tmp_path / "out")))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(prepared_lines(result.stderr)) == 1 and "(300 images" in prepared_lines(result.stderr)[0]
    assert len(list((cache / "prepared").glob("*.u8"))) == 1
    assert json.loads((tmp_path / "out" / "training_summary.json").read_text())["num_processes"] == 2
    assert all(row["replica_spread"] == 0.0 for row in metrics(tmp_path / "out"))


def machine_command(rank: int, port: int, *arguments: str) -> list[str]:
    """`accelerate launch` of machine `rank` of two, one CPU process each (gloo), meeting on 127.0.0.1:`port`."""
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
        "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "ddpm_hf.train", *arguments,
    ]  # fmt: skip


def test_two_machines_each_prepare_their_own_copy_and_train_as_one_process(tmp_path, folders):
    """Two "machines" on loopback, each with its own cache folder: each prepares its copy once, and the two train
    the weights one process trains (up to the summation order, as in test_train)."""
    common = [*TINY, "--max-train-steps", "4", "--checkpointing-steps", "4", "--dataset", str(folders[SMALL])]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    port, logs = free_port(), [tmp_path / "machine0.log", tmp_path / "machine1.log"]
    machines = [
        subprocess.Popen(machine_command(rank, port, *common, "--cache-dir", str(tmp_path / f"machine{rank}"),
                                         "--output-dir", str(tmp_path / "two")),
                         stdout=subprocess.DEVNULL, stderr=logs[rank].open("w"), env=env)
        for rank in (0, 1)
    ]  # fmt: skip
    try:
        for machine in machines:
            machine.wait(timeout=300)
    finally:
        for machine in machines:
            machine.kill()
    logs = [log.read_text() for log in logs]
    one = run(train_command(*common, "--cache-dir", str(tmp_path / "one"), "--output-dir", str(tmp_path / "one")))
    assert one.returncode == 0, one.stderr[-3000:]
    for rank, (machine, log) in enumerate(zip(machines, logs, strict=True)):
        assert machine.returncode == 0, log[-3000:]
        files = list((tmp_path / f"machine{rank}" / "prepared").glob("*.u8"))
        assert len(files) == 1 and prepared_lines(log) == [prepared_lines(log)[0]]
        assert str(files[0]) in prepared_lines(log)[0]
    assert json.loads((tmp_path / "two" / "training_summary.json").read_text())["num_processes"] == 2
    weights_one, weights_two = checkpoint_tensors(tmp_path / "one", 4), checkpoint_tensors(tmp_path / "two", 4)
    for name, tensor in weights_one["model"].items():
        torch.testing.assert_close(weights_two["model"][name], tensor, rtol=1e-3, atol=1e-4)
