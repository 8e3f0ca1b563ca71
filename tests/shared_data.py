"""The real data of `../shared/data` that some tests use when it is present (they skip, saying why, when not)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ddpm_hf.inception import INCEPTION_FILE_NAME

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
WEIGHTS = SHARED / "inception" / INCEPTION_FILE_NAME  # the FID Inception-v3 extractor
CIFAR10 = SHARED / "cifar10"  # CIFAR-10 in the Hub's `datasets` layout
needs_weights = pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"the FID Inception weights are not at {WEIGHTS}")
needs_cifar10 = pytest.mark.skipif(not CIFAR10.is_dir(), reason=f"the real CIFAR-10 copy is not present at {CIFAR10}")
