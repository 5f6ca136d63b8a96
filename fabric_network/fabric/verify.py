"""Verify a Fabric channel's blocks: hash chain, data hashes and the orderer's signatures.

The rules are Fabric's own (``protoutil/blockutils.go``): a block header hashes as SHA-256 of the DER
``SEQUENCE { INTEGER number, OCTET STRING previous_hash, OCTET STRING data_hash }``; the data hash is SHA-256
of the block's envelopes concatenated; the orderer signs ``metadata.value ‖ signature_header ‖ header_bytes``
in the SIGNATURES metadata. The signer must be an orderer-org identity certified by that org's CA.
Blocks are fetched from a hospital's peer with the Deliver service, signed by the hospital's own identity.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fabric_protos.common import common_pb2
from fabric_protos.msp import identities_pb2
from fabric_protos.orderer import ab_pb2
from fabric_protos.peer import events_pb2_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from fabric_network.fabric.gateway import FabricGateway, translate
from fabric_network.fabric.messages import NONCE_BYTES, creator_of

SIGNATURES = common_pb2.BlockMetadataIndex.Value("SIGNATURES")


class BlockVerificationError(ValueError):
    """A block breaks the chain; the message names the block and what is wrong."""

    def __init__(self, block_number: int, problem: str) -> None:
        super().__init__(f"block {block_number}: {problem}")
        self.block_number = block_number
        self.problem = problem


def _der(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        encoded_length = bytes([length])
    else:
        raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
        encoded_length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + encoded_length + content


def header_bytes(header: common_pb2.BlockHeader) -> bytes:
    """Go's ``asn1.Marshal`` of the header (a non-negative INTEGER gets a leading 0 when its top bit is set)."""
    number = header.number.to_bytes(max(1, (header.number.bit_length() + 8) // 8), "big")
    content = _der(0x02, number) + _der(0x04, header.previous_hash) + _der(0x04, header.data_hash)
    return _der(0x30, content)


def header_hash(header: common_pb2.BlockHeader) -> bytes:
    return hashlib.sha256(header_bytes(header)).digest()


def data_hash(block: common_pb2.Block) -> bytes:
    return hashlib.sha256(b"".join(block.data.data)).digest()


@dataclass(frozen=True)
class OrdererTrust:
    """Who may sign blocks: the orderer org's MSP id and its CA certificate."""

    msp_id: str
    ca_cert_pem: bytes


def _check_signer(creator: bytes, trust: OrdererTrust, number: int) -> ec.EllipticCurvePublicKey:
    identity = identities_pb2.SerializedIdentity.FromString(creator)
    if identity.mspid != trust.msp_id:
        raise BlockVerificationError(number, f"signed by {identity.mspid!r}, not the orderer org")
    cert = x509.load_pem_x509_certificate(identity.id_bytes)
    ca = x509.load_pem_x509_certificate(trust.ca_cert_pem)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise BlockVerificationError(number, "signer certificate not issued by the orderer CA") from exc
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise BlockVerificationError(number, "signer key is not ECDSA")
    return key


def verify_block_signature(block: common_pb2.Block, trust: OrdererTrust) -> None:
    number = block.header.number
    if len(block.metadata.metadata) <= SIGNATURES:
        raise BlockVerificationError(number, "no signature metadata")
    metadata = common_pb2.Metadata.FromString(block.metadata.metadata[SIGNATURES])
    if not metadata.signatures:
        raise BlockVerificationError(number, "not signed by the orderer")
    for signature in metadata.signatures:
        creator = common_pb2.SignatureHeader.FromString(signature.signature_header).creator
        key = _check_signer(creator, trust, number)
        signed = metadata.value + signature.signature_header + header_bytes(block.header)
        try:
            key.verify(signature.signature, signed, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature as exc:
            raise BlockVerificationError(number, "orderer signature does not match") from exc


def verify_chain(blocks: Iterable[common_pb2.Block], trust: OrdererTrust) -> int:
    """Check every block from 0 in order; returns the verified height (number of blocks)."""
    previous: common_pb2.BlockHeader | None = None
    height = 0
    for block in blocks:
        number = block.header.number
        if number != height:
            raise BlockVerificationError(height, f"missing (found block {number} in its place)")
        if block.header.data_hash != data_hash(block):
            raise BlockVerificationError(number, "data hash does not match its transactions")
        if previous is not None and block.header.previous_hash != header_hash(previous):
            raise BlockVerificationError(number, f"previous hash does not match block {number - 1}")
        if number > 0:  # the genesis block is made offline by configtxgen and carries no orderer signature
            verify_block_signature(block, trust)
        previous, height = block.header, height + 1
    return height


def deliver_blocks(gateway: FabricGateway, start: int = 0, follow: bool = False) -> Iterator[common_pb2.Block]:
    """The channel's blocks from ``start`` to the newest (or on, as they are cut, with ``follow``), from the
    gateway peer's Deliver service."""
    identity, channel = gateway.identity, gateway.connection.channel
    nonce = os.urandom(NONCE_BYTES)
    creator = creator_of(identity)
    timestamp = Timestamp()
    timestamp.GetCurrentTime()
    channel_header = common_pb2.ChannelHeader(
        type=common_pb2.HeaderType.DELIVER_SEEK_INFO,
        channel_id=channel,
        tx_id=hashlib.sha256(nonce + creator).hexdigest(),
        timestamp=timestamp,
    )
    stop = (
        ab_pb2.SeekPosition(specified=ab_pb2.SeekSpecified(number=2**64 - 1))
        if follow
        else ab_pb2.SeekPosition(newest=ab_pb2.SeekNewest())
    )
    seek = ab_pb2.SeekInfo(
        start=ab_pb2.SeekPosition(specified=ab_pb2.SeekSpecified(number=start)),
        stop=stop,
        behavior=ab_pb2.SeekInfo.BLOCK_UNTIL_READY if follow else ab_pb2.SeekInfo.FAIL_IF_NOT_READY,
    )
    payload = common_pb2.Payload(
        header=common_pb2.Header(
            channel_header=channel_header.SerializeToString(),
            signature_header=common_pb2.SignatureHeader(creator=creator, nonce=nonce).SerializeToString(),
        ),
        data=seek.SerializeToString(),
    ).SerializeToString()
    envelope = common_pb2.Envelope(payload=payload, signature=identity.sign(payload))
    deliver = events_pb2_grpc.DeliverStub(gateway.grpc_channel)
    try:
        for response in deliver.Deliver(iter([envelope]), timeout=None if follow else gateway.timeout_s):
            if response.HasField("block"):
                yield response.block
            elif response.status != common_pb2.Status.SUCCESS:
                raise BlockVerificationError(start, f"the peer refused to deliver blocks: status {response.status}")
            else:
                return
    except grpc.RpcError as exc:
        raise translate(exc, "deliver blocks") from exc
