"""RFC 9162 inclusion and consistency proofs against the published transparency-dev/merkle vectors.

Sources (hard-coded below, hashes copied verbatim):
- leaves and tree heads: github.com/transparency-dev/merkle testonly/constants.go (LeafInputs, RootHashes)
- inclusion proofs: testonly/reference_test.go TestRefInclusionProof and proof/verify_test.go inclusionProofs
- consistency proofs: testonly/reference_test.go TestRefConsistencyProof and proof/verify_test.go consistencyProofs
- the corruption probes mirror proof/verify_test.go corruptInclusionProof / corruptConsistencyProof.
"""

import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric_network.merkle import (
    MerkleProofError,
    MerkleTree,
    leaf_hash,
    merkle_root,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)

LEAVES = [
    bytes.fromhex(h)
    for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
]
ROOTS = {
    size: bytes.fromhex(h)
    for size, h in {
        1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    }.items()
}
H = {
    "a": "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "b": "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "e": "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "j": "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "g": "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "h": "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    "i": "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
    "ij": "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    "k": "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "l": "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
}
# (leaf index, tree size, expected audit path)
INCLUSION_VECTORS = [
    (0, 1, []),
    (0, 2, ["b"]),
    (1, 2, ["a"]),
    (2, 3, ["g"]),
    (1, 5, ["a", "h", "e"]),
    (0, 8, ["b", "h", "l"]),
    (5, 8, ["e", "ij", "k"]),
]
# (old size, new size, expected proof)
CONSISTENCY_VECTORS = [
    (1, 1, []),
    (1, 8, ["b", "h", "l"]),
    (2, 5, ["h", "e"]),
    (6, 8, ["i", "ij", "k"]),
    (6, 7, ["i", "j", "k"]),
]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")
EMPTY_ROOT = hashlib.sha256(b"").digest()


def _tree(size: int) -> MerkleTree:
    return MerkleTree([leaf_hash(leaf) for leaf in LEAVES[:size]])


@pytest.mark.parametrize(("index", "size", "expected"), INCLUSION_VECTORS)
def test_inclusion_proofs_match_the_published_vectors(index: int, size: int, expected: list[str]) -> None:
    tree = _tree(size)
    proof = tree.inclusion_proof(index)
    assert [p.hex() for p in proof] == [H[name] for name in expected]
    assert tree.root() == ROOTS[size]
    verify_inclusion(index, size, leaf_hash(LEAVES[index]), proof, ROOTS[size])


@pytest.mark.parametrize(("old", "new", "expected"), CONSISTENCY_VECTORS)
def test_consistency_proofs_match_the_published_vectors(old: int, new: int, expected: list[str]) -> None:
    proof = _tree(new).consistency_proof(old)
    assert [p.hex() for p in proof] == [H[name] for name in expected]
    verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)


def _inclusion_probes(
    index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes
) -> dict[str, tuple[Any, ...]]:
    probes: dict[str, tuple[Any, ...]] = {
        "leafIndex - 1": (index - 1, size, leaf, proof, root),
        "leafIndex + 1": (index + 1, size, leaf, proof, root),
        "leafIndex ^ 2": (index ^ 2, size, leaf, proof, root),
        "treeSize * 2": (index, size * 2, leaf, proof, root),
        "treeSize / 2": (index, size // 2, leaf, proof, root),
        "wrong leaf": (index, size, b"WrongLeaf", proof, root),
        "empty root": (index, size, leaf, proof, EMPTY_ROOT),
        "random root": (index, size, leaf, proof, SOME_HASH),
        "trailing garbage": (index, size, leaf, [*proof, b""], root),
        "trailing root": (index, size, leaf, [*proof, root], root),
        "preceding garbage": (index, size, leaf, [b"", *proof], root),
        "preceding root": (index, size, leaf, [root, *proof], root),
    }
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 8]) + flipped[i][1:]
        probes[f"modified proof[{i}] bit 3"] = (index, size, leaf, flipped, root)
    if proof:
        probes["removed component"] = (index, size, leaf, proof[:-1], root)
    if len(proof) > 1:
        probes["inserted component"] = (index, size, leaf, [proof[0], SOME_HASH, *proof[1:]], root)
    return probes


@pytest.mark.parametrize(("index", "size", "expected"), [v for v in INCLUSION_VECTORS if v[1] > 1])
def test_corrupted_inclusion_proofs_are_rejected(index: int, size: int, expected: list[str]) -> None:
    proof = [bytes.fromhex(H[name]) for name in expected]
    for desc, probe in _inclusion_probes(index, size, leaf_hash(LEAVES[index]), proof, ROOTS[size]).items():
        with pytest.raises(MerkleProofError):
            verify_inclusion(*probe)
            pytest.fail(f"accepted: {desc}")


@pytest.mark.parametrize(("old", "new", "expected"), [v for v in CONSISTENCY_VECTORS if v[2]])
def test_corrupted_consistency_proofs_are_rejected(old: int, new: int, expected: list[str]) -> None:
    proof = [bytes.fromhex(H[name]) for name in expected]
    r1, r2 = ROOTS[old], ROOTS[new]
    probes: dict[str, tuple[Any, ...]] = {
        "size1 - 1": (old - 1, new, r1, r2, proof),
        "size1 + 1": (old + 1, new, r1, r2, proof),
        "size1 ^ 2": (old ^ 2, new, r1, r2, proof),
        "size2 * 2": (old, new * 2, r1, r2, proof),
        "size2 / 2": (old, new // 2, r1, r2, proof),
        "wrong root1": (old, new, b"WrongRoot", r2, proof),
        "wrong root2": (old, new, r1, b"WrongRoot", proof),
        "swapped roots": (old, new, r2, r1, proof),
        "empty proof": (old, new, r1, r2, []),
        "trailing garbage": (old, new, r1, r2, [*proof, b""]),
        "trailing root1": (old, new, r1, r2, [*proof, r1]),
        "trailing root2": (old, new, r1, r2, [*proof, r2]),
        "preceding garbage": (old, new, r1, r2, [b"", *proof]),
        "preceding root1": (old, new, r1, r2, [r1, *proof]),
        "preceding root2": (old, new, r1, r2, [r2, *proof]),
        "preceding proof[0]": (old, new, r1, r2, [proof[0], *proof]),
        "truncated proof": (old, new, r1, r2, proof[:-1]),
    }
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 16]) + flipped[i][1:]
        probes[f"modified proof[{i}] bit 4"] = (old, new, r1, r2, flipped)
    for desc, (s1, s2, root1, root2, p) in probes.items():
        with pytest.raises((MerkleProofError, IndexError)):
            verify_consistency(s1, s2, root1, root2, p)
            pytest.fail(f"accepted: {desc}")


def test_trivial_consistency_cases_follow_transparency_dev() -> None:
    verify_consistency(0, 0, b"r1", b"r1", [])
    verify_consistency(0, 1, b"r1", b"r2", [])
    args: tuple[Any, ...]
    for args in [(1, 1, b"r1", b"r2", []), (1, 0, b"r1", b"r2", []), (1, 2, b"r1", b"r2", [])]:
        with pytest.raises(MerkleProofError):
            verify_consistency(*args)
    with pytest.raises(MerkleProofError):
        verify_consistency(1, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT])


def test_bad_leaf_index_is_an_error_not_a_silent_proof() -> None:
    with pytest.raises(IndexError, match="outside a tree of 3"):
        _tree(3).inclusion_proof(3)
    with pytest.raises(MerkleProofError):
        root_from_inclusion_proof(0, 0, SOME_HASH, [])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=8), min_size=1, max_size=70), st.data())
def test_every_generated_proof_verifies(leaves: list[bytes], data: st.DataObject) -> None:
    tree = MerkleTree([leaf_hash(leaf) for leaf in leaves])
    assert tree.root() == merkle_root(leaves)
    index = data.draw(st.integers(0, len(leaves) - 1))
    verify_inclusion(index, tree.size, leaf_hash(leaves[index]), tree.inclusion_proof(index), tree.root())
    old = data.draw(st.integers(0, len(leaves)))
    old_root = merkle_root(leaves[:old])
    verify_consistency(old, tree.size, old_root, tree.root(), tree.consistency_proof(old))


def test_tree_heads_match_the_published_vectors() -> None:
    """`merkle_root` over a prefix of the reference leaves: the heads consent snapshots and exports commit to."""
    assert merkle_root([]) == hashlib.sha256(b"").digest()
    for size, root in ROOTS.items():
        assert merkle_root(LEAVES[:size]) == root, f"tree of size {size}"
    assert merkle_root([b"a", b"b"]) != merkle_root([b"b", b"a"])
