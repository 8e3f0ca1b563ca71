"""Named random streams: every random draw of a run is a function of the run's seed and of what it is for."""

from __future__ import annotations

import hashlib
from enum import IntEnum

__all__ = ["Stream", "stream_seed"]


class Stream(IntEnum):
    """What a random stream is for: the first key of `stream_seed`. The values are part of every saved run's
    identity (changing one changes what a seed draws), so they are never renumbered."""

    INITIAL_WEIGHTS = 0  # the network's initialisation (no further key)
    # The order of the training rows in an epoch (keys: epoch). It shares the number 0 with INITIAL_WEIGHTS, as it
    # always did: the key tuples differ in length, so the streams differ, and earlier runs keep their data order.
    EPOCH_ORDER = 0
    BATCH = 1  # a training step's global batch: its rows, flips, timesteps and noise (keys: step)
    DROPOUT = 2  # a training step's dropout masks (keys: step, rank)
    SAMPLES = 3  # image i of a sampling run, of the sample grids and of the figures' samples (keys: image index)
    LIKELIHOOD = 4  # the x_t ~ q(x_t | x_0) of the bound for dataset image i (keys: image index)
    FIGURES = 5  # the noise of the paper's Fig. 7 and 8 (keys: figure number, then t for Fig. 7)


def stream_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for the random stream named by `keys` (a purpose, an epoch, a step, a rank, an image index) of a
    run seeded with `seed`. Different keys give unrelated streams; the same keys always give the same one."""
    keys = tuple(int(key) for key in keys)  # a `Stream` counts as its number: the seeds of earlier runs stay
    digest = hashlib.blake2b(repr((int(seed), *keys)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)
