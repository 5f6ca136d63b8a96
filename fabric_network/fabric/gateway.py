"""A Fabric Gateway client: Evaluate, Endorse → Submit → CommitStatus, and ChaincodeEvents over gRPC with TLS.

The official Gateway SDKs exist for Go, Node and Java only; this is the same protocol (fabric-protos
``gateway/gateway.proto``) on ``fabric_protos`` + grpcio, signing with the caller's own key (low-S ECDSA P-256),
so the key never leaves the hospital. Errors come back as :class:`FabricError` subclasses that carry the
contract's own message (the gateway wraps it as ``chaincode response 500, <message>`` inside
``ErrorDetail`` s in the gRPC status details). An MVCC read conflict at commit is retried with a fresh
proposal and exponential backoff: the contracts read before they write, so a retry re-validates.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from fabric_protos.discovery import protocol_pb2 as discovery_pb2
from fabric_protos.discovery import protocol_pb2_grpc as discovery_pb2_grpc
from fabric_protos.gateway import gateway_pb2, gateway_pb2_grpc
from fabric_protos.gossip import message_pb2 as gossip_pb2
from fabric_protos.msp import identities_pb2
from fabric_protos.orderer import ab_pb2
from fabric_protos.peer import proposal_response_pb2, transaction_pb2
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory

from fabric_network.fabric.messages import creator_of, new_proposal, transaction_result
from fabric_network.identities import SigningIdentity

VALID = transaction_pb2.TxValidationCode.Value("VALID")
MVCC_READ_CONFLICT = transaction_pb2.TxValidationCode.Value("MVCC_READ_CONFLICT")
ENDORSEMENT_POLICY_FAILURE = transaction_pb2.TxValidationCode.Value("ENDORSEMENT_POLICY_FAILURE")
DUPLICATE_TXID = transaction_pb2.TxValidationCode.Value("DUPLICATE_TXID")
_CHAINCODE_PREFIX = "chaincode response "


class FabricError(RuntimeError):
    """A Fabric request failed; ``str()`` is the most specific message available (the contract's, if any)."""


class ContractRejected(FabricError):
    """The contract refused the transaction (its validation or caller check failed); the message is its own."""


class EndorsementPolicyFailure(FabricError):
    """The transaction was committed as invalid because its endorsements did not satisfy the policy."""


class MVCCConflict(FabricError):
    """Every attempt hit an MVCC read conflict: another transaction changed a key this one read."""


class TransactionInvalid(FabricError):
    """The transaction was committed with another non-VALID validation code."""


class DuplicateTransaction(FabricError):
    """A transaction with this id (same idempotency key) is already on the ledger; ``args[0]`` is the id."""

    @property
    def transaction_id(self) -> str:
        return str(self.args[0])


class EndorsementMismatch(FabricError):
    """Endorsing peers returned different results: one of them had not yet committed the latest block (a
    transaction endorsed right after another committed on a different peer). Transient; endorsed again."""


class GatewayUnavailable(FabricError):
    """The peer's gateway could not be reached or timed out."""


@dataclass(frozen=True)
class Committed:
    """A committed transaction: its id, the block it landed in and the contract's return value."""

    transaction_id: str
    block_number: int
    payload: bytes


@dataclass(frozen=True)
class Prepared:
    """An endorsed transaction, signed and ready for the orderer (``envelope`` is None until endorsed)."""

    transaction: str
    transaction_id: str
    endorsing_orgs: tuple[str, ...]
    envelope: Any


@dataclass(frozen=True)
class ContractEvent:
    """A chaincode event as delivered by the gateway, with the block it was committed in."""

    block_number: int
    transaction_id: str
    name: str
    payload: bytes


@dataclass(frozen=True)
class GatewayConnection:
    """Where a hospital's gateway peer is and how to trust its TLS certificate."""

    endpoint: str  # host:port of the peer
    tls_root_cert_pem: bytes  # the peer org's TLS CA
    channel: str
    chaincode: str
    server_name: str | None = None  # TLS name override when the endpoint is not in the certificate's SANs


def _status_message_class() -> Any:
    """``google.rpc.Status`` (code, message, details: Any[]) built in a private pool: grpcio-status needs a
    protobuf newer than the 5.x fabric-protos is pinned to."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(any_pb2.DESCRIPTOR.serialized_pb)
    file_proto = descriptor_pb2.FileDescriptorProto(
        name="carefed/rpc_status.proto", package="google.rpc", dependency=["google/protobuf/any.proto"]
    )
    status = file_proto.message_type.add(name="Status")
    field = descriptor_pb2.FieldDescriptorProto
    status.field.add(name="code", number=1, type=field.TYPE_INT32, label=field.LABEL_OPTIONAL)
    status.field.add(name="message", number=2, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    status.field.add(
        name="details",
        number=3,
        type=field.TYPE_MESSAGE,
        label=field.LABEL_REPEATED,
        type_name=".google.protobuf.Any",
    )
    pool.Add(file_proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.Status"))


RpcStatus = _status_message_class()


def error_details(error: grpc.RpcError) -> list[gateway_pb2.ErrorDetail]:
    """The gateway's per-peer ``ErrorDetail`` s from the status details trailer."""
    trailers = error.trailing_metadata() if isinstance(error, grpc.Call) else None
    raw = dict(trailers or ()).get("grpc-status-details-bin")
    if not raw:
        return []
    details = []
    for packed in RpcStatus.FromString(raw).details:
        if packed.type_url.endswith("/gateway.ErrorDetail"):
            details.append(gateway_pb2.ErrorDetail.FromString(packed.value))
    return details


def contract_message(detail_message: str) -> str:
    """``chaincode response 500, consent: pseudonym must be …`` → ``consent: pseudonym must be …``."""
    if detail_message.startswith(_CHAINCODE_PREFIX):
        _, _, message = detail_message.partition(", ")
        return message
    return detail_message


def translate(error: grpc.RpcError, action: str) -> FabricError:
    """A gRPC failure of a gateway call → the CareFed error a caller can act on."""
    code = error.code() if isinstance(error, grpc.Call) else None
    details = error_details(error)
    contract_messages = [contract_message(d.message) for d in details if d.message.startswith(_CHAINCODE_PREFIX)]
    if contract_messages:
        return ContractRejected(contract_messages[0])
    summary = error.details() if isinstance(error, grpc.Call) else str(error)
    extra = "; ".join(f"{d.msp_id or d.address}: {d.message}" for d in details)
    message = f"{action}: {summary}" + (f" ({extra})" if extra else "")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return GatewayUnavailable(message)
    return FabricError(message)


class FabricGateway:
    """One hospital identity talking to one gateway peer; thread-safe (grpc channels are)."""

    def __init__(
        self,
        connection: GatewayConnection,
        identity: SigningIdentity,
        *,
        timeout_s: float = 30.0,
        mvcc_retries: int = 5,
        backoff_s: float = 0.05,
    ) -> None:
        self.connection = connection
        self.identity = identity
        self.timeout_s = timeout_s
        self.mvcc_retries = mvcc_retries
        self.backoff_s = backoff_s
        options = [("grpc.ssl_target_name_override", connection.server_name)] if connection.server_name else []
        credentials = grpc.ssl_channel_credentials(root_certificates=connection.tls_root_cert_pem)
        self.grpc_channel = grpc.secure_channel(connection.endpoint, credentials, options=options)
        self._gateway = gateway_pb2_grpc.GatewayStub(self.grpc_channel)
        self._discovery = discovery_pb2_grpc.DiscoveryStub(self.grpc_channel)

    def close(self) -> None:
        self.grpc_channel.close()

    def _args(self, transaction: str, args: Sequence[str]) -> list[bytes]:
        return [transaction.encode(), *(a.encode() for a in args)]

    def evaluate(
        self, transaction: str, args: Sequence[str] = (), target_orgs: Sequence[str] = (), chaincode: str | None = None
    ) -> bytes:
        """Run a read-only transaction on the gateway peer (or ``target_orgs``); nothing is ordered.

        ``chaincode`` overrides the connection's (e.g. ``qscc`` for the peer's ledger queries).
        """
        proposal = new_proposal(
            self.identity,
            self.connection.channel,
            chaincode or self.connection.chaincode,
            self._args(transaction, args),
        )
        request = gateway_pb2.EvaluateRequest(
            transaction_id=proposal.transaction_id,
            channel_id=self.connection.channel,
            proposed_transaction=proposal.signed,
            target_organizations=list(target_orgs),
        )
        try:
            response = self._gateway.Evaluate(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise translate(exc, f"evaluate {transaction}") from exc
        return bytes(response.result.payload)

    def submit(self, transaction: str, args: Sequence[str] = (), endorsing_orgs: Sequence[str] = ()) -> Committed:
        """Endorse, order and wait for commit; retried on MVCC conflicts with a fresh proposal."""
        for attempt in range(self.mvcc_retries + 1):
            try:
                return self.submit_once(transaction, args, endorsing_orgs)
            except MVCCConflict:
                if attempt == self.mvcc_retries:
                    raise
                self.backoff(attempt)
        raise AssertionError("unreachable")

    def backoff(self, attempt: int) -> None:
        """Exponential backoff before retry number ``attempt + 1``."""
        time.sleep(self.backoff_s * 2**attempt)

    def submit_once(
        self,
        transaction: str,
        args: Sequence[str] = (),
        endorsing_orgs: Sequence[str] = (),
        nonce: bytes | None = None,
    ) -> Committed:
        """Endorse → sign the envelope → Submit → CommitStatus, once.

        A given ``nonce`` fixes the transaction id; if that id is already on the ledger Fabric refuses it and
        :class:`DuplicateTransaction` is raised instead of committing twice.
        """
        prepared = self.endorse(transaction, args, endorsing_orgs, nonce)
        self.send(prepared)
        return self.committed(prepared)

    def endorse(
        self,
        transaction: str,
        args: Sequence[str] = (),
        endorsing_orgs: Sequence[str] = (),
        nonce: bytes | None = None,
    ) -> Prepared:
        """Have the transaction endorsed (per the policy, or by ``endorsing_orgs``) and sign its envelope."""
        channel = self.connection.channel
        proposal = new_proposal(
            self.identity, channel, self.connection.chaincode, self._args(transaction, args), nonce=nonce
        )
        prepared = Prepared(transaction, proposal.transaction_id, tuple(endorsing_orgs), None)
        request = gateway_pb2.EndorseRequest(
            transaction_id=prepared.transaction_id,
            channel_id=channel,
            proposed_transaction=proposal.signed,
            endorsing_organizations=list(endorsing_orgs),
        )
        for attempt in range(self.mvcc_retries + 1):
            try:
                with self._submit_errors(prepared):
                    endorsed = self._gateway.Endorse(request, timeout=self.timeout_s)
                break
            except EndorsementMismatch:
                if attempt == self.mvcc_retries:
                    raise
                self.backoff(attempt)
        envelope = endorsed.prepared_transaction
        envelope.signature = self.identity.sign(envelope.payload)
        return Prepared(transaction, prepared.transaction_id, prepared.endorsing_orgs, envelope)

    def send(self, prepared: Prepared) -> None:
        """Hand an endorsed transaction to the orderer; returns once the orderer has accepted it.

        Transactions sent one after the other through one gateway are ordered in that order.
        """
        with self._submit_errors(prepared):
            self._gateway.Submit(
                gateway_pb2.SubmitRequest(
                    transaction_id=prepared.transaction_id,
                    channel_id=self.connection.channel,
                    prepared_transaction=prepared.envelope,
                ),
                timeout=self.timeout_s,
            )

    def committed(self, prepared: Prepared) -> Committed:
        """Wait for a sent transaction's commit; its block and result, or the error its validation code means."""
        tx_id, transaction = prepared.transaction_id, prepared.transaction
        with self._submit_errors(prepared):
            status = self.commit_status(tx_id)
        if status.result == DUPLICATE_TXID:
            raise DuplicateTransaction(tx_id)
        if status.result == MVCC_READ_CONFLICT:
            raise MVCCConflict(f"{transaction} ({tx_id}): MVCC read conflict")
        if status.result == ENDORSEMENT_POLICY_FAILURE:
            endorsers = ", ".join(prepared.endorsing_orgs) or "the gateway default"
            raise EndorsementPolicyFailure(
                f"{transaction} ({tx_id}) was endorsed by {endorsers} and does not satisfy the chaincode's "
                "endorsement policy"
            )
        if status.result != VALID:
            code = transaction_pb2.TxValidationCode.Name(status.result)
            raise TransactionInvalid(f"{transaction} ({tx_id}) committed as invalid: {code}")
        assert prepared.envelope is not None
        return Committed(tx_id, int(status.block_number), bytes(transaction_result(prepared.envelope).payload))

    @contextmanager
    def _submit_errors(self, prepared: Prepared) -> Iterator[None]:
        """gRPC failures of a submit's steps → :class:`FabricError` s (a repeated id → DuplicateTransaction)."""
        try:
            yield
        except grpc.RpcError as exc:
            error = translate(exc, f"submit {prepared.transaction}")
            if "duplicate transaction found" in str(error) or any(
                "duplicate transaction found" in d.message for d in error_details(exc)
            ):
                raise DuplicateTransaction(prepared.transaction_id) from exc
            if "ProposalResponsePayloads do not match" in str(error):
                raise EndorsementMismatch(str(error)) from exc
            raise error from exc

    def commit_status(self, transaction_id: str) -> gateway_pb2.CommitStatusResponse:
        """Block until the transaction is committed on the gateway peer; its validation code and block."""
        request = gateway_pb2.CommitStatusRequest(
            transaction_id=transaction_id, channel_id=self.connection.channel, identity=creator_of(self.identity)
        ).SerializeToString()
        signed = gateway_pb2.SignedCommitStatusRequest(request=request, signature=self.identity.sign(request))
        return self._gateway.CommitStatus(signed, timeout=self.timeout_s)

    def endorsers(self) -> dict[str, list[str]]:
        """The chaincode's endorsing peers as this peer's discovery service reports them: MSP id → endpoints.

        This is the very view the peer's gateway plans endorsements from (gossip membership of the channel,
        filtered to peers that have the chaincode installed), so an org missing here is an org the gateway
        cannot ask to endorse — the ``failed to find any endorsing peers for org(s)`` of a submit.
        """
        interest = proposal_response_pb2.ChaincodeInterest(
            chaincodes=[proposal_response_pb2.ChaincodeCall(name=self.connection.chaincode)]
        )
        request = discovery_pb2.Request(
            authentication=discovery_pb2.AuthInfo(client_identity=creator_of(self.identity)),
            queries=[
                discovery_pb2.Query(
                    channel=self.connection.channel, cc_query=discovery_pb2.ChaincodeQuery(interests=[interest])
                )
            ],
        ).SerializeToString()
        signed = discovery_pb2.SignedRequest(payload=request, signature=self.identity.sign(request))
        try:
            response = self._discovery.Discover(signed, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise translate(exc, "discover endorsers") from exc
        result = response.results[0]
        if result.HasField("error"):
            raise FabricError(f"discover endorsers: {result.error.content}")
        found: dict[str, set[str]] = {}
        for descriptor in result.cc_query_res.content:
            for peers in descriptor.endorsers_by_groups.values():
                for peer in peers.peers:
                    msp_id = identities_pb2.SerializedIdentity.FromString(peer.identity).mspid
                    alive = gossip_pb2.GossipMessage.FromString(peer.membership_info.payload).alive_msg
                    found.setdefault(msp_id, set()).add(alive.membership.endpoint)
        return {msp_id: sorted(endpoints) for msp_id, endpoints in sorted(found.items())}

    def events(self, start_block: int = 0, timeout_s: float | None = None) -> Iterator[ContractEvent]:
        """Chaincode events committed from ``start_block`` on, as they come (ends on timeout or close)."""
        request = gateway_pb2.ChaincodeEventsRequest(
            channel_id=self.connection.channel,
            chaincode_id=self.connection.chaincode,
            identity=creator_of(self.identity),
            start_position=ab_pb2.SeekPosition(specified=ab_pb2.SeekSpecified(number=start_block)),
        ).SerializeToString()
        signed = gateway_pb2.SignedChaincodeEventsRequest(request=request, signature=self.identity.sign(request))
        stream = self._gateway.ChaincodeEvents(signed, timeout=timeout_s)
        try:
            for response in stream:
                for event in response.events:
                    yield ContractEvent(int(response.block_number), event.tx_id, event.event_name, bytes(event.payload))
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise translate(exc, "chaincode events") from exc
        finally:
            stream.cancel()
