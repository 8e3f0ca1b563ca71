"""Named random streams: every random draw of a run is a function of the run's seed and of what it is for."""

from __future__ import annotations

import hashlib

__all__ = ["stream_seed"]


def stream_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for the random stream named by `keys` (a purpose, an epoch, a step, a rank, an image index) of a
    run seeded with `seed`. Different keys give unrelated streams; the same keys always give the same one."""
    digest = hashlib.blake2b(repr((seed, *keys)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)
