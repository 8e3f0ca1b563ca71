"""Named random streams: every random draw of a run is a function of the run's seed and of what it is for."""

from __future__ import annotations

import hashlib
from enum import IntEnum

__all__ = ["Stream", "stream_seed"]


class Stream(IntEnum):
    """What a random stream is for: the first key of `stream_seed`. The values are part of every saved run's
    identity (changing one changes what a seed draws), so they are never renumbered."""

    INITIAL_WEIGHTS = 0  # the network's initialisation
    BATCH = 1  # a training step's global batch: its rows, flips, timesteps and noise (keys: step)
    DROPOUT = 2  # a training step's dropout masks (keys: step, rank)
    SAMPLES = 3  # the image of a sampling run (keys: image index)


def stream_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for the random stream named by `keys` (a purpose, an epoch, a step, a rank, an image index) of a
    run seeded with `seed`. Different keys give unrelated streams; the same keys always give the same one."""
    keys = tuple(int(key) for key in keys)  # a `Stream` counts as its number: the seeds of earlier runs stay
    digest = hashlib.blake2b(repr((int(seed), *keys)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)
