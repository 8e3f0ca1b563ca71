"""Specification of `ddpm_hf.output_folder`: one run per folder at a time, and no run lands on another's results."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from bad_input import tree_digest

from ddpm_hf.output_folder import RUN_FILES, OutputFolderError, claim_output_folder, previous_run_files


def a_finished_run(folder):
    (folder / "checkpoints" / "checkpoint-0000006").mkdir(parents=True)
    (folder / "checkpoints" / "checkpoint-0000006" / "state.json").write_text("{}")
    (folder / "metrics.jsonl").write_text('{"step": 6}\n')
    (folder / "training_summary.json").write_text("{}")
    (folder / "notes.txt").write_text("the user's own file")
    return folder


def test_a_new_run_refuses_a_folder_holding_another_run_and_changes_nothing(tmp_path):
    run = a_finished_run(tmp_path / "run")
    before = tree_digest(run)
    with pytest.raises(OutputFolderError) as error:
        claim_output_folder(run, resumes_here=False, overwrite=False)
    message = str(error.value)
    assert str(run) in message and "checkpoints, training_summary.json, metrics.jsonl" in message
    assert "--resume latest" in message and "--output-dir" in message and "--overwrite-output-dir" in message
    assert tree_digest(run) == before  # not even a lock file is left behind


def test_resuming_the_folders_own_run_is_allowed(tmp_path):
    run = a_finished_run(tmp_path / "run")
    claim_output_folder(run, resumes_here=True, overwrite=False).release()
    assert (run / "checkpoints").is_dir()


def test_overwrite_deletes_only_the_previous_runs_results(tmp_path):
    run = a_finished_run(tmp_path / "run")
    lock = claim_output_folder(run, resumes_here=False, overwrite=True)
    assert previous_run_files(run) == [] and (run / "notes.txt").read_text() == "the user's own file"
    lock.release()
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]


def test_empty_results_and_unrelated_files_are_not_a_run(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "metrics.jsonl").write_text("")
    (tmp_path / "data.csv").write_text("x")
    assert previous_run_files(tmp_path) == []
    claim_output_folder(tmp_path, resumes_here=False, overwrite=False).release()
    assert set(RUN_FILES) >= {"checkpoints", "pipeline", "metrics.jsonl", "training_summary.json"}


def test_an_output_folder_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(OutputFolderError, match="is a file, not a folder"):
        claim_output_folder(tmp_path / "out", resumes_here=False, overwrite=False)


def test_a_folder_created_for_a_run_that_failed_early_is_removed_again(tmp_path):
    claim_output_folder(tmp_path / "new", resumes_here=False, overwrite=False).release()
    assert not (tmp_path / "new").exists()


def test_a_second_run_in_a_locked_folder_is_told_who_holds_it(tmp_path):
    """Another process holds the lock (as a second `ddpm-hf train` would find it): refused, naming its PID."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from ddpm_hf.output_folder import "
         "claim_output_folder; lock = claim_output_folder(Path(sys.argv[1]), False, False); print('locked', "
         "flush=True); sys.stdin.read()", str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputFolderError, match=rf"in use by another training run \(host .*, PID {holder.pid}\)"):
            claim_output_folder(tmp_path, resumes_here=False, overwrite=False)
    finally:
        holder.communicate("", timeout=60)
    claim_output_folder(tmp_path, resumes_here=False, overwrite=False).release()  # free again once it ended


def test_a_killed_run_leaves_no_stale_lock(tmp_path):
    holder = subprocess.run(
        [sys.executable, "-c", "import os, sys, signal; from pathlib import Path; from ddpm_hf.output_folder import "
         "claim_output_folder; claim_output_folder(Path(sys.argv[1]), False, False); "
         "os.kill(os.getpid(), signal.SIGKILL)", str(tmp_path)],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=60,
    )  # fmt: skip
    assert holder.returncode == -9 and (tmp_path / ".lock").is_file()
    claim_output_folder(tmp_path, resumes_here=False, overwrite=False).release()
