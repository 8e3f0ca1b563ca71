"""A training run's output folder: one run at a time, and no run destroys another's results.

Two rules, checked by `claim_output_folder` before a run writes anything:

- **A new run never lands on an old one.** A run that does not resume from this folder's own checkpoints refuses a
  folder that already holds a run's results (checkpoints, the pipeline, the summary, the metrics, …), naming the
  folder and the ways out: `--resume latest` to continue that run, another `--output-dir`, or `--overwrite-output-dir`
  to delete those results first (diffusers' training examples call the option so).
- **One run per folder at a time.** The folder's `.lock` file is held with `flock` by the run's main process for the
  whole run, and holds its host and PID, which a second run is told. The operating system releases the lock when the
  process ends, however it ends, so a killed run leaves no stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
from pathlib import Path

__all__ = ["RUN_FILES", "OutputFolderError", "OutputFolderLock", "previous_run_files", "claim_output_folder"]

# Everything `ddpm_hf.train` writes into its output folder.
RUN_FILES = (
    "checkpoints",
    "pipeline",
    "best_pipeline",
    "best_fid.json",
    "training_summary.json",
    "metrics.jsonl",
    "loss_curve.png",
    "samples.png",
    "samples",
    "logs",
)
LOCK_NAME = ".lock"


class OutputFolderError(ValueError):
    """The output folder cannot be used by this run; the message says why and what to do."""


def previous_run_files(output_dir: Path) -> list[str]:
    """The names of `RUN_FILES` present in `output_dir` (an empty `metrics.jsonl` or folder does not count)."""
    found = []
    for name in RUN_FILES:
        path = output_dir / name
        if path.is_dir() and any(path.iterdir()) or path.is_file() and path.stat().st_size > 0:
            found.append(name)
    return found


class OutputFolderLock:
    """An exclusive `flock` on `output_dir/.lock`, held until `release` (or the process's end)."""

    def __init__(self, output_dir: Path):
        self.path = output_dir / LOCK_NAME
        self.created_folder = not output_dir.exists()
        output_dir.mkdir(parents=True, exist_ok=True)
        while True:
            handle = open(self.path, "a+")  # noqa: SIM115 - held open for the run's lifetime
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                owner = handle.read().strip() or "another process"
                handle.close()
                raise OutputFolderError(
                    f"{output_dir} is in use by another training run ({owner}); wait for it to finish, or choose "
                    "another --output-dir."
                ) from None
            # The file may have been removed by its previous owner between our open and our lock: then lock anew.
            if self.path.exists() and os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
            handle.close()
        handle.seek(0)
        handle.truncate()
        handle.write(f"host {socket.gethostname()}, PID {os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        """Remove the lock file and unlock; remove the folder too if the run created it and left nothing in it."""
        if self._handle is None:
            return
        self.path.unlink(missing_ok=True)
        self._handle.close()
        self._handle = None
        folder = self.path.parent
        if self.created_folder and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def claim_output_folder(output_dir: Path, resumes_here: bool, overwrite: bool) -> OutputFolderLock:
    """Lock `output_dir` for a run and check that the run may write there (see the module docstring).

    Args:
        resumes_here: the run continues from a checkpoint of `output_dir/checkpoints`.
        overwrite: delete a previous run's results (`RUN_FILES`) once the folder is locked.

    Raises:
        OutputFolderError: `output_dir` is a file, is locked by another run, or holds another run's results.
    """
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputFolderError(f"--output-dir {output_dir} is a file, not a folder: choose another --output-dir.")
    lock = OutputFolderLock(output_dir)
    previous = [] if resumes_here else previous_run_files(output_dir)
    if previous and not overwrite:
        lock.release()
        raise OutputFolderError(
            f"{output_dir} already holds a training run ({', '.join(previous)}): continue it with --resume latest, "
            "or choose a new --output-dir, or pass --overwrite-output-dir to delete it and start again."
        )
    for name in previous:
        path = output_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return lock
