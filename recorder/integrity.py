"""Hashes that make a recording tamper-evident: each segment's SHA-256, and a chain across the
segments of one recording so a segment cannot be removed, reordered or swapped with another
recording's without the chain breaking.

    genesis  = SHA-256("endolink-recording:" + recording_id)          (hex)
    chain_i  = SHA-256(bytes.fromhex(chain_{i-1}) + bytes.fromhex(sha256_i))   chain_0 = genesis

All values are lowercase hex strings. Blocking file reads: call ``sha256_file`` off the loop.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20
GENESIS_PREFIX = "endolink-recording:"


def sha256_file(path: Path) -> tuple[str, int]:
    """(hex digest, size in bytes) of a file as it is on disk now."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def chain_genesis(recording_id: str) -> str:
    return hashlib.sha256((GENESIS_PREFIX + recording_id).encode()).hexdigest()


def chain_next(previous: str, segment_sha256: str) -> str:
    return hashlib.sha256(bytes.fromhex(previous) + bytes.fromhex(segment_sha256)).hexdigest()


def chain_of(recording_id: str, segment_hashes: list[str]) -> list[str]:
    """The chain value after each segment, in order."""
    chain, values = chain_genesis(recording_id), []
    for sha in segment_hashes:
        chain = chain_next(chain, sha)
        values.append(chain)
    return values
