"""The Gateway client's messages and error handling, against a fake gateway that checks what a peer checks.

The fake verifies every signature with the creator's certificate (and that it is low-S), re-derives the
transaction id from nonce and creator, and answers with the structures the real gateway returns — so what is
tested is CareFed's client (message building, signing, result parsing, error translation, MVCC retry). The
real peers are exercised by the network tests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest
from fabric_protos.common import common_pb2
from fabric_protos.gateway import gateway_pb2, gateway_pb2_grpc
from fabric_protos.msp import identities_pb2
from fabric_protos.peer import (
    chaincode_event_pb2,
    chaincode_pb2,
    proposal_pb2,
    proposal_response_pb2,
    transaction_pb2,
)

from fabric_network import gateway
from fabric_network.gateway import FabricGateway, GatewayConnection
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
    assert extension.chaincode_id.name == "carefed"
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

    def Evaluate(self, request, context):
        args = check_proposal(request.proposed_transaction, request.transaction_id)
        if args[0] == b"Consent:read" and args[1] == b"bad":
            abort_with_detail(
                context,
                grpc.StatusCode.UNKNOWN,
                "evaluate call to endorser returned error",
                "chaincode response 500, pseudonym: must be 64 lowercase hex characters",
            )
        return gateway_pb2.EvaluateResponse(result=proposal_response_pb2.Response(status=200, payload=b"|".join(args)))

    def Endorse(self, request, context):
        args = check_proposal(request.proposed_transaction, request.transaction_id)
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
        return gateway_pb2.SubmitResponse()

    def CommitStatus(self, request, context):
        inner = gateway_pb2.CommitStatusRequest.FromString(request.request)
        verify(inner.identity, request.signature, request.request)
        assert inner.transaction_id == self.submitted[-1]
        result = self.commit_results.pop(0) if self.commit_results else gateway.VALID
        return gateway_pb2.CommitStatusResponse(result=result, block_number=7)

    def ChaincodeEvents(self, request, context):
        inner = gateway_pb2.ChaincodeEventsRequest.FromString(request.request)
        verify(inner.identity, request.signature, request.request)
        assert (inner.channel_id, inner.chaincode_id) == ("carefed", "carefed")
        start = inner.start_position.specified.number
        for block in range(start, start + 2):
            event = chaincode_event_pb2.ChaincodeEvent(tx_id=f"tx{block}", event_name="Recorded", payload=b"{}")
            yield gateway_pb2.ChaincodeEventsResponse(events=[event], block_number=block)


@pytest.fixture
def fake() -> Iterator[tuple[FakeGateway, FabricGateway]]:
    ca = TestCA("hospital-a-tlsca")
    tls = ca.issue("peer0.hospital-a.carefed.local")
    servicer = FakeGateway()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    gateway_pb2_grpc.add_GatewayServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(tls.key_pem, tls.cert_pem)]))
    server.start()
    user = TestCA("hospital-a-ca").issue("User1@hospital-a.carefed.local")
    identity = SigningIdentity("HospitalAMSP", "User1", "client", user.cert_pem, user.key)
    client = FabricGateway(
        GatewayConnection(f"127.0.0.1:{port}", ca.cert_pem, "carefed", "carefed"), identity, backoff_s=0.001
    )
    yield servicer, client
    client.close()
    server.stop(None)


def test_evaluate_sends_a_signed_valid_proposal_over_tls(fake: tuple[FakeGateway, FabricGateway]) -> None:
    _, client = fake
    assert client.evaluate("Consent:read", ["a1"]) == b"Consent:read|a1"


def test_contract_error_comes_back_with_the_contracts_own_message(fake: tuple[FakeGateway, FabricGateway]) -> None:
    _, client = fake
    with pytest.raises(gateway.ContractRejected, match=r"^pseudonym: must be 64 lowercase hex characters$"):
        client.evaluate("Consent:read", ["bad"])


def test_submit_signs_the_envelope_and_returns_the_result(fake: tuple[FakeGateway, FabricGateway]) -> None:
    servicer, client = fake
    committed = client.submit("Audit:append", ["e1"])
    assert (committed.block_number, committed.payload) == (7, b"e1")
    assert servicer.submitted == [committed.transaction_id]


def test_mvcc_conflict_is_retried_with_a_fresh_proposal(fake: tuple[FakeGateway, FabricGateway]) -> None:
    servicer, client = fake
    servicer.commit_results = [gateway.MVCC_READ_CONFLICT, gateway.MVCC_READ_CONFLICT]
    committed = client.submit("Audit:append", ["e1"])
    assert len(set(servicer.submitted)) == 3 and committed.transaction_id == servicer.submitted[-1]


def test_mvcc_conflict_gives_up_after_the_retries(fake: tuple[FakeGateway, FabricGateway]) -> None:
    servicer, client = fake
    servicer.commit_results = [gateway.MVCC_READ_CONFLICT] * (client.mvcc_retries + 1)
    with pytest.raises(gateway.MVCCConflict):
        client.submit("Audit:append", ["e1"])


def test_policy_failure_at_commit_is_reported(fake: tuple[FakeGateway, FabricGateway]) -> None:
    servicer, client = fake
    servicer.commit_results = [gateway.ENDORSEMENT_POLICY_FAILURE]
    with pytest.raises(gateway.EndorsementPolicyFailure, match="HospitalAMSP"):
        client.submit("Audit:append", ["e1"], endorsing_orgs=["HospitalAMSP"])


def test_unreachable_gateway_is_a_clear_error() -> None:
    ca = TestCA("nobody")
    user = ca.issue("u")
    client = FabricGateway(
        GatewayConnection("127.0.0.1:1", ca.cert_pem, "carefed", "carefed"),
        SigningIdentity("HospitalAMSP", "u", "client", user.cert_pem, user.key),
        timeout_s=2,
    )
    with pytest.raises(gateway.GatewayUnavailable, match="evaluate Consent:read"):
        client.evaluate("Consent:read", ["a1"])
    client.close()


def test_chaincode_events_are_requested_signed_from_the_given_block(fake: tuple[FakeGateway, FabricGateway]) -> None:
    _, client = fake
    events = list(client.events(start_block=5, timeout_s=5))
    assert [(e.block_number, e.transaction_id, e.name) for e in events] == [
        (5, "tx5", "Recorded"),
        (6, "tx6", "Recorded"),
    ]
