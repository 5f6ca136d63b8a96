"""RFC 9162 (Certificate Transparency v2) Merkle tree hashing over SHA-256.

Consent snapshots and audit exports commit to their entries with the same tree, so the standard
inclusion and consistency proofs of RFC 9162 §2.1 apply to both. Leaves are hashed with the 0x00
prefix and interior nodes with 0x01, which keeps a leaf from ever being confused with a node.
"""

import hashlib
from collections.abc import Sequence

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"


def leaf_hash(leaf: bytes) -> bytes:
    """MTH({d0}) = SHA-256(0x00 || d0)."""
    return hashlib.sha256(LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """An interior node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """k with k < n <= 2k, the split point of RFC 9162's recursive definition."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """The tree head over already-hashed leaves; the empty tree hashes to SHA-256 of nothing."""
    n = len(hashes)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashes[0]
    k = _largest_power_of_two_below(n)
    return node_hash(root_from_leaf_hashes(hashes[:k]), root_from_leaf_hashes(hashes[k:]))


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of RFC 9162 §2.1.1 over the leaves in the given order."""
    return root_from_leaf_hashes([leaf_hash(leaf) for leaf in leaves])
