"""Fabric proposals, envelopes and signatures, built the way the official Gateway SDKs build them.

There is no maintained Python Fabric SDK, so CareFed builds the few messages the Gateway protocol needs from
``fabric_protos`` itself (fabric-gateway ``pkg/client/proposalbuilder.go``, ``transactioncontext.go``,
``signingidentity.go``; the peer checks them in ``core/endorser/msgvalidation.go``).
Signatures are ECDSA P-256 over SHA-256, normalised to low S: Fabric rejects high-S signatures
("Invalid S. Must be smaller than half the order"), and ``cryptography`` returns either half at random.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from fabric_protos.common import common_pb2
from fabric_protos.msp import identities_pb2
from fabric_protos.peer import chaincode_pb2, proposal_pb2, proposal_response_pb2, transaction_pb2
from google.protobuf.timestamp_pb2 import Timestamp

# Order of the P-256 group: a signature's s must be at most half of it.
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
NONCE_BYTES = 24


@dataclass(frozen=True)
class SigningIdentity:
    """An MSP member that signs: its MSP id, its PEM certificate and its P-256 private key."""

    msp_id: str
    certificate_pem: bytes
    private_key: ec.EllipticCurvePrivateKey

    @classmethod
    def from_msp_dir(cls, msp_id: str, msp_dir: Path) -> SigningIdentity:
        """Load ``signcerts/*.pem`` and ``keystore/*`` from a Fabric MSP directory (cryptogen's layout)."""
        certs = sorted((msp_dir / "signcerts").glob("*.pem"))
        keys = sorted(p for p in (msp_dir / "keystore").iterdir() if p.is_file())
        if not certs or not keys:
            raise ValueError(f"{msp_dir} is not an MSP directory with signcerts/*.pem and keystore/*")
        key = serialization.load_pem_private_key(keys[0].read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"{keys[0]} is not an ECDSA P-256 key")
        return cls(msp_id, certs[0].read_bytes(), key)

    @property
    def creator(self) -> bytes:
        """The serialized identity the peer reads as the transaction's creator."""
        identity = identities_pb2.SerializedIdentity(mspid=self.msp_id, id_bytes=self.certificate_pem)
        return bytes(identity.SerializeToString())

    def sign(self, message: bytes) -> bytes:
        """DER ECDSA-SHA256 signature with s in the lower half of the group order."""
        r, s = decode_dss_signature(self.private_key.sign(message, ec.ECDSA(hashes.SHA256())))
        return encode_dss_signature(r, min(s, P256_ORDER - s))


def is_low_s(signature: bytes) -> bool:
    _, s = decode_dss_signature(signature)
    return s <= P256_ORDER // 2


def verify_signature(certificate_pem: bytes, signature: bytes, message: bytes) -> None:
    """Raise ``cryptography.exceptions.InvalidSignature`` unless the certificate's key signed ``message``."""
    public_key = x509.load_pem_x509_certificate(certificate_pem).public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))


@dataclass(frozen=True)
class Proposal:
    """A signed chaincode proposal and the transaction id derived from it."""

    transaction_id: str
    signed: proposal_pb2.SignedProposal


def new_proposal(
    identity: SigningIdentity,
    channel_id: str,
    chaincode: str,
    args: list[bytes],
    transient: dict[str, bytes] | None = None,
) -> Proposal:
    """Build and sign a proposal; ``args[0]`` is the transaction name (``Contract:function``)."""
    nonce = os.urandom(NONCE_BYTES)
    creator = identity.creator
    tx_id = hashlib.sha256(nonce + creator).hexdigest()
    timestamp = Timestamp()
    timestamp.GetCurrentTime()
    channel_header = common_pb2.ChannelHeader(
        type=common_pb2.HeaderType.ENDORSER_TRANSACTION,
        channel_id=channel_id,
        tx_id=tx_id,
        timestamp=timestamp,
        epoch=0,
        extension=proposal_pb2.ChaincodeHeaderExtension(
            chaincode_id=chaincode_pb2.ChaincodeID(name=chaincode)
        ).SerializeToString(),
    )
    header = common_pb2.Header(
        channel_header=channel_header.SerializeToString(),
        signature_header=common_pb2.SignatureHeader(creator=creator, nonce=nonce).SerializeToString(),
    )
    invocation = chaincode_pb2.ChaincodeInvocationSpec(
        chaincode_spec=chaincode_pb2.ChaincodeSpec(
            chaincode_id=chaincode_pb2.ChaincodeID(name=chaincode),
            input=chaincode_pb2.ChaincodeInput(args=args),
        )
    )
    payload = proposal_pb2.ChaincodeProposalPayload(input=invocation.SerializeToString(), TransientMap=transient or {})
    proposal_bytes = proposal_pb2.Proposal(
        header=header.SerializeToString(), payload=payload.SerializeToString()
    ).SerializeToString()
    signed = proposal_pb2.SignedProposal(proposal_bytes=proposal_bytes, signature=identity.sign(proposal_bytes))
    return Proposal(tx_id, signed)


def transaction_result(envelope: common_pb2.Envelope) -> proposal_response_pb2.Response:
    """The chaincode's response inside an endorsed transaction (fabric-gateway ``transactionparser.go``)."""
    payload = common_pb2.Payload.FromString(envelope.payload)
    transaction = transaction_pb2.Transaction.FromString(payload.data)
    action_payload = transaction_pb2.ChaincodeActionPayload.FromString(transaction.actions[0].payload)
    response_payload = proposal_response_pb2.ProposalResponsePayload.FromString(
        action_payload.action.proposal_response_payload
    )
    return proposal_pb2.ChaincodeAction.FromString(response_payload.extension).response
