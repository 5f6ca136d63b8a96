"""Fabric proposals, envelopes and signatures, built the way the official Gateway SDKs build them.

There is no maintained Python Fabric SDK, so CareFed builds the few messages the Gateway protocol needs from
``fabric_protos`` itself (fabric-gateway ``pkg/client/proposalbuilder.go``, ``transactioncontext.go``,
``signingidentity.go``; the peer checks them in ``core/endorser/msgvalidation.go``).
Signatures come from :class:`fabric_network.identities.SigningIdentity`: ECDSA P-256 over SHA-256, low S.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from fabric_protos.common import common_pb2
from fabric_protos.msp import identities_pb2
from fabric_protos.peer import chaincode_pb2, proposal_pb2, proposal_response_pb2, transaction_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from fabric_network.identities import SigningIdentity

NONCE_BYTES = 24


def creator_of(identity: SigningIdentity) -> bytes:
    """The serialized identity (MSP id + PEM certificate) the peer reads as a transaction's creator."""
    serialized = identities_pb2.SerializedIdentity(mspid=identity.msp_id, id_bytes=identity.cert_pem)
    return bytes(serialized.SerializeToString())


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
    nonce: bytes | None = None,
) -> Proposal:
    """Build and sign a proposal; ``args[0]`` is the transaction name (``Contract:function``).

    A given ``nonce`` fixes the transaction id (an idempotency key's retries share it); by default it is random.
    """
    nonce = nonce if nonce is not None else os.urandom(NONCE_BYTES)
    creator = creator_of(identity)
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


def chaincode_action(envelope: common_pb2.Envelope) -> proposal_pb2.ChaincodeAction:
    """The endorsed chaincode action (response, events) inside a transaction envelope (``transactionparser.go``)."""
    payload = common_pb2.Payload.FromString(envelope.payload)
    transaction = transaction_pb2.Transaction.FromString(payload.data)
    action_payload = transaction_pb2.ChaincodeActionPayload.FromString(transaction.actions[0].payload)
    response_payload = proposal_response_pb2.ProposalResponsePayload.FromString(
        action_payload.action.proposal_response_payload
    )
    return proposal_pb2.ChaincodeAction.FromString(response_payload.extension)


def transaction_result(envelope: common_pb2.Envelope) -> proposal_response_pb2.Response:
    """The chaincode's response inside an endorsed transaction."""
    return chaincode_action(envelope).response
