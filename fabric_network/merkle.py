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


class MerkleProofError(ValueError):
    """A proof does not bind the claimed leaf or tree to the claimed tree head."""


class _SubtreeRoots:
    """Memoised MTH(D[start:end]) over one list of leaf hashes.

    Proof generation asks for the same subtree roots again and again (one proof per exported event);
    caching them keeps a bundle of n events at O(n log n) hashes instead of O(n²).
    """

    def __init__(self, hashes: Sequence[bytes]) -> None:
        self._hashes = hashes
        self._cache: dict[tuple[int, int], bytes] = {}

    def root(self, start: int, end: int) -> bytes:
        if end - start == 1:
            return self._hashes[start]
        cached = self._cache.get((start, end))
        if cached is None:
            k = _largest_power_of_two_below(end - start)
            cached = node_hash(self.root(start, start + k), self.root(start + k, end))
            self._cache[(start, end)] = cached
        return cached

    def path(self, index: int, start: int, end: int) -> list[bytes]:
        """PATH(m, D[start:end]) of RFC 9162 §2.1.3.1, the audit path of leaf `index`."""
        if end - start == 1:
            return []
        k = _largest_power_of_two_below(end - start)
        if index < start + k:
            return [*self.path(index, start, start + k), self.root(start + k, end)]
        return [*self.path(index, start + k, end), self.root(start, start + k)]

    def subproof(self, old_end: int, start: int, end: int, old_is_complete_subtree: bool) -> list[bytes]:
        """SUBPROOF(m, D[start:end], b) of RFC 9162 §2.1.4.1."""
        if old_end == end:
            return [] if old_is_complete_subtree else [self.root(start, end)]
        k = _largest_power_of_two_below(end - start)
        if old_end - start <= k:
            return [*self.subproof(old_end, start, start + k, old_is_complete_subtree), self.root(start + k, end)]
        return [*self.subproof(old_end, start + k, end, False), self.root(start, start + k)]


class MerkleTree:
    """An RFC 9162 tree over already-hashed leaves that hands out inclusion and consistency proofs."""

    def __init__(self, hashes: Sequence[bytes]) -> None:
        self.leaf_hashes = list(hashes)
        self._subtrees = _SubtreeRoots(self.leaf_hashes)

    @property
    def size(self) -> int:
        return len(self.leaf_hashes)

    def root(self) -> bytes:
        if not self.leaf_hashes:
            return hashlib.sha256(b"").digest()
        return self._subtrees.root(0, self.size)

    def inclusion_proof(self, index: int) -> list[bytes]:
        """The audit path proving leaf `index` is in this tree (RFC 9162 §2.1.3.1)."""
        if not 0 <= index < self.size:
            raise IndexError(f"leaf index {index} is outside a tree of {self.size} leaves")
        return self._subtrees.path(index, 0, self.size)

    def consistency_proof(self, old_size: int) -> list[bytes]:
        """The proof that the tree of the first `old_size` leaves is a prefix of this one (§2.1.4.1)."""
        if not 0 <= old_size <= self.size:
            raise IndexError(f"old tree size {old_size} is outside 0..{self.size}")
        if old_size in (0, self.size):
            return []
        return self._subtrees.subproof(old_size, 0, self.size, True)


def _shift_while_lsb_clear(fn: int, sn: int) -> tuple[int, int]:
    """Right-shift both counters until fn's lowest bit is set or fn is 0 (the RFC's inner loop)."""
    while fn and not fn & 1:
        fn >>= 1
        sn >>= 1
    return fn, sn


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The tree head implied by a leaf hash at `index` and its audit path (RFC 9162 §2.1.3.2)."""
    if not 0 <= index < size:
        raise MerkleProofError(f"leaf index {index} is outside a tree of {size} leaves")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise MerkleProofError("the inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            fn, sn = _shift_while_lsb_clear(fn, sn)
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MerkleProofError("the inclusion proof is shorter than the tree is deep")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Raise MerkleProofError unless `leaf` sits at `index` of the tree of `size` leaves with head `root`."""
    if root_from_inclusion_proof(index, size, leaf, proof) != root:
        raise MerkleProofError(f"leaf {index} of {size} does not lead to the tree head")


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    """Raise MerkleProofError unless the old tree is a prefix of the new one (RFC 9162 §2.1.4.2)."""
    if old_size > new_size:
        raise MerkleProofError(f"the old tree ({old_size} leaves) is larger than the new one ({new_size})")
    if old_size == new_size:
        if proof:
            raise MerkleProofError("trees of equal size need an empty consistency proof")
        if old_root != new_root:
            raise MerkleProofError("trees of equal size have different heads")
        return
    if old_size == 0:
        if proof:
            raise MerkleProofError("the empty tree needs an empty consistency proof")
        return
    if not proof:
        raise MerkleProofError("the consistency proof is empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise MerkleProofError("the consistency proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            fn, sn = _shift_while_lsb_clear(fn, sn)
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MerkleProofError("the consistency proof is shorter than the tree is deep")
    if fr != old_root:
        raise MerkleProofError(f"the first {old_size} leaves of the new tree do not match the old tree head")
    if sr != new_root:
        raise MerkleProofError("the consistency proof does not lead to the new tree head")
