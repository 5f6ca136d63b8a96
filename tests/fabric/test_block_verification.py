"""Fabric block verification: Fabric's header encoding, and tampering caught at the right block.

The chain here is built by the test, signed with the orderer identity of `carefed ledger init`; the header
encoding is checked against DER vectors worked out by hand from X.690, independent of the code under test.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from fabric_protos.common import common_pb2

from fabric_network.fabric.messages import creator_of
from fabric_network.fabric.verify import (
    BlockVerificationError,
    OrdererTrust,
    data_hash,
    header_bytes,
    header_hash,
    verify_chain,
)
from fabric_network.identities import SigningIdentity, identity_for, init_identities

Chain = tuple[list[common_pb2.Block], OrdererTrust, Path]


def test_header_bytes_are_gos_asn1_encoding() -> None:
    header = common_pb2.BlockHeader(number=1, previous_hash=b"\x01" * 32, data_hash=b"\x02" * 32)
    expected = bytes.fromhex("3047" + "020101" + "0420" + "01" * 32 + "0420" + "02" * 32)
    assert header_bytes(header) == expected
    genesis = common_pb2.BlockHeader(number=0, previous_hash=b"", data_hash=b"\x03")
    assert header_bytes(genesis) == bytes.fromhex("3008" + "020100" + "0400" + "040103")
    high_bit = common_pb2.BlockHeader(number=128, previous_hash=b"", data_hash=b"")
    assert header_bytes(high_bit) == bytes.fromhex("3008" + "02020080" + "0400" + "0400")


def _block(number: int, previous: common_pb2.Block | None, signer: SigningIdentity) -> common_pb2.Block:
    block = common_pb2.Block()
    block.data.data.extend([os.urandom(40), os.urandom(10)])
    block.header.number = number
    block.header.previous_hash = header_hash(previous.header) if previous else b""
    block.header.data_hash = data_hash(block)
    value = os.urandom(8)
    signature_header = common_pb2.SignatureHeader(creator=creator_of(signer), nonce=os.urandom(24))
    metadata = common_pb2.Metadata(value=value)
    entry = metadata.signatures.add()
    entry.signature_header = signature_header.SerializeToString()
    entry.signature = signer.sign(value + entry.signature_header + header_bytes(block.header))
    block.metadata.metadata.extend([metadata.SerializeToString(), b"", b"", b"", b""])
    return block


@pytest.fixture(scope="module")
def chain_and_trust(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    state = tmp_path_factory.mktemp("state")
    consortium = init_identities(state, ["hospital-a", "hospital-b"])
    orderer = identity_for(consortium, "consortium", "node")
    blocks: list[common_pb2.Block] = []
    for number in range(5):
        blocks.append(_block(number, blocks[-1] if blocks else None, orderer))
    trust = OrdererTrust(consortium.orderer.msp_id, Path(consortium.orderer.ca_cert).read_bytes())
    return blocks, trust, state


def _copy(blocks: list[common_pb2.Block]) -> list[common_pb2.Block]:
    return [common_pb2.Block.FromString(b.SerializeToString()) for b in blocks]


def test_an_intact_chain_verifies_to_its_height(chain_and_trust: Chain) -> None:
    blocks, trust, _ = chain_and_trust
    assert verify_chain(blocks, trust) == 5


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda bs: bs[3].data.data.__setitem__(0, b"forged"), "block 3: data hash"),
        (lambda bs: setattr(bs[2].header, "previous_hash", hashlib.sha256(b"x").digest()), "block 2: previous hash"),
        (lambda bs: bs.pop(2), "block 2: missing"),
        (lambda bs: bs.insert(1, bs.pop(2)), "block 1: missing"),
    ],
)
def test_tampering_is_caught_at_the_right_block(
    chain_and_trust: Chain, tamper: Callable[[list[common_pb2.Block]], object], message: str
) -> None:
    blocks, trust, _ = chain_and_trust
    tampered = _copy(blocks)
    tamper(tampered)
    with pytest.raises(BlockVerificationError, match=message):
        verify_chain(tampered, trust)


def test_a_re_hashed_forgery_fails_on_the_orderer_signature(chain_and_trust: Chain) -> None:
    blocks, trust, _ = chain_and_trust
    forged = _copy(blocks)
    forged[4].data.data[0] = b"forged"
    forged[4].header.data_hash = data_hash(forged[4])
    with pytest.raises(BlockVerificationError, match="block 4: orderer signature does not match"):
        verify_chain(forged, trust)


def test_a_block_signed_by_a_hospital_is_refused(chain_and_trust: Chain) -> None:
    blocks, trust, state = chain_and_trust
    from fabric_network.identities import load_consortium

    hospital = identity_for(load_consortium(state), "hospital-a", "node")
    forged = [*_copy(blocks[:4]), _block(4, blocks[3], hospital)]
    with pytest.raises(BlockVerificationError, match="block 4: signed by 'HospitalAMSP'"):
        verify_chain(forged, trust)
