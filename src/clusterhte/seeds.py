"""Deterministic seeds from one root seed.

Every random stream of the workflow is derived with :class:`numpy.random.SeedSequence` from the
root seed and a key of strings/integers such as ``("otr", "d1_J25_n25", rep, "w-aug")``. Strings
are hashed with sha256 (not Python's salted ``hash``), so seeds are the same on every machine.
"""

from __future__ import annotations

import hashlib

import numpy as np


def _word(part) -> int:
    if isinstance(part, (int, np.integer)):
        return int(part) & 0xFFFFFFFF
    return int.from_bytes(hashlib.sha256(str(part).encode()).digest()[:4], "little")


def seed_sequence(root: int, *key) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(root) & 0xFFFFFFFF, *(_word(k) for k in key)])


def rng(root: int, *key) -> np.random.Generator:
    """A generator for the stream named by ``key`` under ``root``."""
    return np.random.default_rng(seed_sequence(root, *key))


def int_seed(root: int, *key) -> int:
    """A 31-bit integer seed (for libraries that take an int) for the stream ``key``."""
    return int(seed_sequence(root, *key).generate_state(1, dtype=np.uint32)[0] & 0x7FFFFFFF)
