"""The examples run as the README shows them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_quickstart_example_saves_a_grid_and_a_pipeline_that_plain_diffusers_reproduces(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    difference = float(result.stdout.split("max difference ddpm_hf vs diffusers: ")[1].split()[0])
    assert difference < 1e-5
    assert (tmp_path / "outputs" / "quickstart" / "grid.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "outputs" / "quickstart" / "pipeline" / "model_index.json").is_file()
