"""A fake Fabric gateway for unit tests of CareFed's client: it checks what a peer checks, answers as one.

It verifies every signature with the creator's certificate (and that it is low-S), re-derives the transaction
id from nonce and creator, refuses a transaction id it has already committed ("duplicate transaction found",
as the endorser does), and answers ``qscc`` queries (GetTransactionByID, GetBlockByTxID, GetChainInfo) from
the transactions it committed — so the client's message building, parsing and error handling are exercised
end to end over real gRPC and TLS. It is not a Fabric peer: no chaincode runs, no endorsement policy applies.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc
from fabric_protos.common import common_pb2, ledger_pb2
from fabric_protos.gateway import gateway_pb2, gateway_pb2_grpc
from fabric_protos.msp import identities_pb2
from fabric_protos.peer import (
    chaincode_event_pb2,
    chaincode_pb2,
    proposal_pb2,
    proposal_response_pb2,
    transaction_pb2,
)

from fabric_network.fabric import gateway
from fabric_network.fabric.gateway import FabricGateway, GatewayConnection
from fabric_network.identities import SigningIdentity, is_low_s
from tests.fabric.pki import TestCA


def verify(identity_bytes: bytes, signature: bytes, message: bytes) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    cert = identities_pb2.SerializedIdentity.FromString(identity_bytes).id_bytes
    key = x509.load_pem_x509_certificate(cert).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    assert is_low_s(signature)


def check_proposal(signed: proposal_pb2.SignedProposal, tx_id: str) -> list[bytes]:
    """What ``core/endorser/msgvalidation.go`` checks, then the invocation's args."""
    proposal = proposal_pb2.Proposal.FromString(signed.proposal_bytes)
    header = common_pb2.Header.FromString(proposal.header)
    signature_header = common_pb2.SignatureHeader.FromString(header.signature_header)
    verify(signature_header.creator, signed.signature, signed.proposal_bytes)
    channel_header = common_pb2.ChannelHeader.FromString(header.channel_header)
    assert channel_header.type == common_pb2.HeaderType.ENDORSER_TRANSACTION
    assert (
        channel_header.tx_id == tx_id == hashlib.sha256(signature_header.nonce + signature_header.creator).hexdigest()
    )
    extension = proposal_pb2.ChaincodeHeaderExtension.FromString(channel_header.extension)
    assert extension.chaincode_id.name in ("carefed", "qscc")
    payload = proposal_pb2.ChaincodeProposalPayload.FromString(proposal.payload)
    spec = chaincode_pb2.ChaincodeInvocationSpec.FromString(payload.input).chaincode_spec
    return list(spec.input.args)


def abort_with_detail(context: grpc.ServicerContext, code: grpc.StatusCode, message: str, detail: str) -> None:
    status = gateway.RpcStatus(code=code.value[0], message=message)
    packed = status.details.add()
    packed.type_url = "type.googleapis.com/gateway.ErrorDetail"
    error = gateway_pb2.ErrorDetail(address="127.0.0.1:7051", msp_id="HospitalAMSP", message=detail)
    packed.value = error.SerializeToString()
    context.set_trailing_metadata([("grpc-status-details-bin", status.SerializeToString())])
    context.abort(code, message)


@dataclass
class FakeGateway(gateway_pb2_grpc.GatewayServicer):
    commit_results: list[int] = field(default_factory=list)
    endorsements: list[list[bytes]] = field(default_factory=list)
    submitted: list[str] = field(default_factory=list)
    pending: dict[str, common_pb2.Envelope] = field(default_factory=dict)
    committed: dict[str, tuple[int, common_pb2.Envelope, int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def Evaluate(self, request, context):
        args = check_proposal(request.proposed_transaction, request.transaction_id)
        if args[0] in (b"GetTransactionByID", b"GetBlockByTxID", b"GetChainInfo"):
            return gateway_pb2.EvaluateResponse(result=self._qscc(args, context))
        if args[0] == b"Consent:read" and args[1] == b"bad":
            abort_with_detail(
                context,
                grpc.StatusCode.UNKNOWN,
                "evaluate call to endorser returned error",
                "chaincode response 500, pseudonym: must be 64 lowercase hex characters",
            )
        return gateway_pb2.EvaluateResponse(result=proposal_response_pb2.Response(status=200, payload=b"|".join(args)))

    def _qscc(self, args: list[bytes], context: grpc.ServicerContext) -> proposal_response_pb2.Response:
        if args[0] == b"GetChainInfo":
            payload = ledger_pb2.BlockchainInfo(height=len(self.committed) + 1).SerializeToString()
            return proposal_response_pb2.Response(status=200, payload=payload)
        tx_id = args[2].decode()
        if tx_id not in self.committed:
            abort_with_detail(context, grpc.StatusCode.UNKNOWN, "evaluate failed", f"no such transaction ID [{tx_id}]")
        block, envelope, code = self.committed[tx_id]
        if args[0] == b"GetBlockByTxID":
            payload = common_pb2.Block(header=common_pb2.BlockHeader(number=block)).SerializeToString()
        else:
            payload = transaction_pb2.ProcessedTransaction(
                transactionEnvelope=envelope, validationCode=code
            ).SerializeToString()
        return proposal_response_pb2.Response(status=200, payload=payload)

    def Endorse(self, request, context):
        args = check_proposal(request.proposed_transaction, request.transaction_id)
        if request.transaction_id in self.committed:
            abort_with_detail(
                context,
                grpc.StatusCode.ABORTED,
                "failed to endorse transaction, see attached details for more info",
                f"duplicate transaction found [{request.transaction_id}]. Creator [...]",
            )
        self.endorsements.append(args)
        action = proposal_pb2.ChaincodeAction(response=proposal_response_pb2.Response(status=200, payload=args[-1]))
        response_payload = proposal_response_pb2.ProposalResponsePayload(extension=action.SerializeToString())
        action_payload = transaction_pb2.ChaincodeActionPayload(
            action=transaction_pb2.ChaincodeEndorsedAction(
                proposal_response_payload=response_payload.SerializeToString()
            )
        )
        transaction = transaction_pb2.Transaction(
            actions=[transaction_pb2.TransactionAction(payload=action_payload.SerializeToString())]
        )
        proposal = proposal_pb2.Proposal.FromString(request.proposed_transaction.proposal_bytes)
        payload = common_pb2.Payload(
            header=common_pb2.Header.FromString(proposal.header), data=transaction.SerializeToString()
        )
        return gateway_pb2.EndorseResponse(
            prepared_transaction=common_pb2.Envelope(payload=payload.SerializeToString())
        )

    def Submit(self, request, context):
        envelope = request.prepared_transaction
        header = common_pb2.Payload.FromString(envelope.payload).header
        creator = common_pb2.SignatureHeader.FromString(header.signature_header).creator
        verify(creator, envelope.signature, envelope.payload)
        self.submitted.append(request.transaction_id)
        self.pending[request.transaction_id] = envelope
        return gateway_pb2.SubmitResponse()

    def CommitStatus(self, request, context):
        inner = gateway_pb2.CommitStatusRequest.FromString(request.request)
        verify(inner.identity, request.signature, request.request)
        with self.lock:  # the client submits batches concurrently
            assert inner.transaction_id in self.pending, "commit status asked for a transaction never submitted"
            result = self.commit_results.pop(0) if self.commit_results else gateway.VALID
            block = len(self.committed) + 1
            self.committed[inner.transaction_id] = (block, self.pending.pop(inner.transaction_id), result)
        return gateway_pb2.CommitStatusResponse(result=result, block_number=block)

    def ChaincodeEvents(self, request, context):
        inner = gateway_pb2.ChaincodeEventsRequest.FromString(request.request)
        verify(inner.identity, request.signature, request.request)
        assert (inner.channel_id, inner.chaincode_id) == ("carefed", "carefed")
        start = inner.start_position.specified.number
        for block in range(start, start + 2):
            event = chaincode_event_pb2.ChaincodeEvent(tx_id=f"tx{block}", event_name="Recorded", payload=b"{}")
            yield gateway_pb2.ChaincodeEventsResponse(events=[event], block_number=block)


@contextmanager
def serve_fake_gateway() -> Iterator[tuple[FakeGateway, FabricGateway]]:
    """The fake on a TLS port, and a client for a hospital-a user connected to it."""
    ca = TestCA("hospital-a-tlsca")
    tls = ca.issue("peer0.hospital-a.carefed.local")
    servicer = FakeGateway()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    gateway_pb2_grpc.add_GatewayServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(tls.key_pem, tls.cert_pem)]))
    server.start()
    user = TestCA("hospital-a-ca").issue("User1@hospital-a.carefed.local")
    identity = SigningIdentity("HospitalAMSP", "User1", "client", user.cert_pem, user.key)
    client = FabricGateway(
        GatewayConnection(f"127.0.0.1:{port}", ca.cert_pem, "carefed", "carefed"), identity, backoff_s=0.001
    )
    try:
        yield servicer, client
    finally:
        client.close()
        server.stop(None)
