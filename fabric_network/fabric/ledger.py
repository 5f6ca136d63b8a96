"""The `Ledger` interface on a real Fabric network, through a hospital's gateway peer.

``open_ledger(backend="fabric", state_dir=…, org=…, role=…)`` returns this: every CareFed caller then works
on Fabric by configuration alone. How each guarantee of the interface maps onto Fabric:

* ``submit`` = Endorse → Submit → CommitStatus (VALID), retried on MVCC conflicts; a contract refusal comes
  back as :class:`~fabric_network.ledger.ContractRejected` with the contract's own message.
* idempotency: the key fixes the proposal nonce, hence the transaction id; Fabric itself refuses a second
  transaction with the same id ("duplicate transaction found"), and the first commit is returned with
  ``duplicate=True`` (its block and result read back through the peer's ``qscc``).
* ``submit_batch`` submits the calls concurrently, so they are cut into the same block(s) by the orderer.
* ``events``, ``verify`` read the channel's blocks through the peer's Deliver service; ``height`` and
  ``block_of`` ask ``qscc``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from fabric_protos.common import common_pb2, ledger_pb2
from fabric_protos.msp import identities_pb2
from fabric_protos.peer import transaction_pb2

from fabric_network.contracts import evaluate_functions
from fabric_network.fabric import gateway as gw
from fabric_network.fabric.messages import chaincode_action
from fabric_network.fabric.verify import BlockVerificationError, OrdererTrust, deliver_blocks, verify_chain
from fabric_network.ledger import (
    Call,
    ContractRejected,
    Ledger,
    LedgerConfigError,
    LedgerError,
    LedgerEvent,
    LedgerSettings,
    LedgerUnavailable,
    TxResult,
    VerifyProgress,
    VerifyReport,
    decode_result,
    encode_argument,
    transaction_nonce,
)

T = TypeVar("T")
QSCC = "qscc"
TRANSACTIONS_FILTER = common_pb2.BlockMetadataIndex.Value("TRANSACTIONS_FILTER")
ENDORSER_TRANSACTION = common_pb2.HeaderType.Value("ENDORSER_TRANSACTION")
MAX_CONCURRENT_SUBMITS = 64
# Validation codes after which an idempotent submission is tried again under its next id.
RETRIED_CODES = {
    transaction_pb2.TxValidationCode.Value("MVCC_READ_CONFLICT"),
    transaction_pb2.TxValidationCode.Value("PHANTOM_READ_CONFLICT"),
}


def _timestamp_text(seconds: int, nanos: int) -> str:
    moment = dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def block_events(block: common_pb2.Block) -> Iterator[LedgerEvent]:
    """The chaincode events of a block's *valid* transactions, as the interface reports them."""
    codes = block.metadata.metadata[TRANSACTIONS_FILTER] if len(block.metadata.metadata) > TRANSACTIONS_FILTER else b""
    for index, data in enumerate(block.data.data):
        if index >= len(codes) or codes[index] != gw.VALID:
            continue
        envelope = common_pb2.Envelope.FromString(data)
        payload = common_pb2.Payload.FromString(envelope.payload)
        channel_header = common_pb2.ChannelHeader.FromString(payload.header.channel_header)
        if channel_header.type != ENDORSER_TRANSACTION:
            continue
        event = chaincode_action(envelope).events
        if not event:
            continue
        chaincode_event = _chaincode_event(event)
        creator = common_pb2.SignatureHeader.FromString(payload.header.signature_header).creator
        yield LedgerEvent(
            block_number=block.header.number,
            tx_id=channel_header.tx_id,
            timestamp=_timestamp_text(channel_header.timestamp.seconds, channel_header.timestamp.nanos),
            creator_msp=identities_pb2.SerializedIdentity.FromString(creator).mspid,
            name=chaincode_event.event_name,
            payload=decode_result(bytes(chaincode_event.payload)) or {},
        )


def _chaincode_event(raw: bytes) -> Any:
    from fabric_protos.peer import chaincode_event_pb2

    return chaincode_event_pb2.ChaincodeEvent.FromString(raw)


@contextmanager
def _as_ledger_errors(function: str) -> Iterator[None]:
    """Gateway errors → the interface's: the contract's refusal, unavailability, anything else."""
    try:
        yield
    except gw.ContractRejected as exc:
        raise ContractRejected(f"{function}: {exc}") from None
    except gw.GatewayUnavailable as exc:
        raise LedgerUnavailable(str(exc)) from exc
    except gw.FabricError as exc:
        raise LedgerError(str(exc)) from exc


class FabricLedger(Ledger):
    """One identity's view of the channel through its organisation's gateway peer."""

    def __init__(self, gateway: gw.FabricGateway, trust: OrdererTrust) -> None:
        self._gateway = gateway
        self._trust = trust
        # Fabric would order a submitted query like any transaction (a block entry that writes nothing);
        # the interface refuses it on every backend, as the embedded ledger does.
        self._evaluate_only = evaluate_functions()

    @property
    def msp_id(self) -> str:
        return self._gateway.identity.msp_id

    def submit(self, function: str, *args: Any, idempotency_key: str | None = None) -> TxResult:
        if function in self._evaluate_only:
            raise LedgerError(f"{function}: is read-only; use evaluate")
        encoded = [encode_argument(a) for a in args]
        with _as_ledger_errors(function):
            if idempotency_key is None:
                committed = self._gateway.submit(function, encoded)
            else:
                return self._submit_once_only(function, encoded, idempotency_key)
        return TxResult(committed.transaction_id, committed.block_number, decode_result(committed.payload))

    def _submit_once_only(self, function: str, args: list[str], key: str) -> TxResult:
        """Exactly-once under an idempotency key. Attempt *n* uses the nonce of ``key`` (n = 0) or ``key#n``:
        Fabric records MVCC-invalidated transactions too, so a retry needs a new id — and a repeated
        submission walks the same ids, finding the valid one instead of committing again."""
        for attempt in range(self._gateway.mvcc_retries + 1):
            nonce = transaction_nonce(key if attempt == 0 else f"{key}#{attempt}")
            try:
                committed = self._gateway.submit_once(function, args, nonce=nonce)
            except gw.DuplicateTransaction as duplicate:
                processed = self._processed(duplicate.transaction_id)
                if processed.validationCode in RETRIED_CODES:
                    continue
                return self._committed(duplicate.transaction_id, processed)
            except gw.MVCCConflict:
                self._gateway.backoff(attempt)
                continue
            return TxResult(committed.transaction_id, committed.block_number, decode_result(committed.payload))
        raise gw.MVCCConflict(f"{function}: every attempt under idempotency_key {key!r} hit a read conflict")

    def submit_batch(self, calls: Sequence[Call]) -> list[TxResult | LedgerError]:
        """Each call's outcome, as if the calls ran one after the other in the given order.

        Endorsed concurrently, then handed to the orderer in call order (so Fabric orders them as given), then
        awaited concurrently: independent calls share blocks. A call that read what an earlier call of the
        batch wrote fails its commit with a read conflict and is run again, after the earlier ones — against
        the state they left, exactly what the embedded ledger does by running the batch in order.
        """
        if not calls:
            return []
        outcomes: list[TxResult | LedgerError | gw.Prepared | None] = [None] * len(calls)
        with ThreadPoolExecutor(max_workers=min(MAX_CONCURRENT_SUBMITS, len(calls))) as pool:
            for index, endorsed in enumerate(pool.map(self._endorse, calls)):
                outcomes[index] = endorsed
            for index, outcome in enumerate(outcomes):
                if isinstance(outcome, gw.Prepared):
                    outcomes[index] = self._guarded(outcome.transaction, partial(self._send, outcome))
            sent = [(i, o) for i, o in enumerate(outcomes) if isinstance(o, gw.Prepared)]
            for (index, _), result in zip(sent, pool.map(self._await, sent), strict=True):
                outcomes[index] = result
        final: list[TxResult | LedgerError] = []
        for call, outcome in zip(calls, outcomes, strict=True):
            if outcome is None:  # conflicted with an earlier call of the batch, or its key was used: run it now
                try:
                    outcome = self.submit(call.function, *call.args, idempotency_key=call.idempotency_key)
                except LedgerError as exc:
                    outcome = exc
            assert not isinstance(outcome, gw.Prepared)
            final.append(outcome)
        return final

    def _endorse(self, call: Call) -> gw.Prepared | LedgerError | None:
        """Endorse one call of a batch: prepared, refused, or None to run it again in order."""
        if call.function in self._evaluate_only:
            return LedgerError(f"{call.function}: is read-only; use evaluate")
        nonce = transaction_nonce(call.idempotency_key) if call.idempotency_key is not None else None
        args = [encode_argument(a) for a in call.args]
        return self._guarded(call.function, lambda: self._gateway.endorse(call.function, args, nonce=nonce))

    def _send(self, prepared: gw.Prepared) -> gw.Prepared:
        self._gateway.send(prepared)
        return prepared

    def _await(self, item: tuple[int, gw.Prepared]) -> TxResult | LedgerError | None:
        prepared = item[1]

        def result() -> TxResult:
            committed = self._gateway.committed(prepared)
            return TxResult(committed.transaction_id, committed.block_number, decode_result(committed.payload))

        return self._guarded(prepared.transaction, result)

    @staticmethod
    def _guarded(function: str, step: Callable[[], T]) -> T | LedgerError | None:
        """Run one step of a batched submit: its value, a LedgerError, or None when the call must run again."""
        try:
            with _as_ledger_errors(function):
                try:
                    return step()
                except (gw.MVCCConflict, gw.DuplicateTransaction):
                    return None
        except LedgerError as exc:
            return exc

    def evaluate(self, function: str, *args: Any) -> Any:
        with _as_ledger_errors(function):
            return decode_result(self._gateway.evaluate(function, [encode_argument(a) for a in args]))

    def _qscc(self, function: str, *args: str) -> bytes:
        channel = self._gateway.connection.channel
        try:
            return self._gateway.evaluate(function, [channel, *args], chaincode=QSCC)
        except gw.GatewayUnavailable as exc:
            raise LedgerUnavailable(str(exc)) from exc
        except gw.FabricError as exc:
            raise LedgerError(f"{function}: {exc}") from exc

    def height(self) -> int:
        return int(ledger_pb2.BlockchainInfo.FromString(self._qscc("GetChainInfo")).height)

    def block_of(self, tx_id: str) -> int:
        try:
            return int(common_pb2.Block.FromString(self._qscc("GetBlockByTxID", tx_id)).header.number)
        except LedgerUnavailable:
            raise
        except LedgerError:
            raise LedgerError(f"tx_id: {tx_id} is not on the ledger") from None

    def _processed(self, tx_id: str) -> Any:
        return transaction_pb2.ProcessedTransaction.FromString(self._qscc("GetTransactionByID", tx_id))

    def _committed(self, tx_id: str, processed: Any) -> TxResult:
        """An already committed transaction (the first submission of an idempotency key)."""
        if processed.validationCode != gw.VALID:
            code = transaction_pb2.TxValidationCode.Name(processed.validationCode)
            raise LedgerError(f"idempotency_key: its first submission ({tx_id}) was committed as invalid ({code})")
        payload = chaincode_action(processed.transactionEnvelope).response.payload
        return TxResult(tx_id, self.block_of(tx_id), decode_result(bytes(payload)), duplicate=True)

    def events(self, from_block: int = 0, *, follow: bool = False, poll_s: float = 0.2) -> Iterator[LedgerEvent]:
        if from_block < 0:
            raise LedgerError("from_block: must be ≥ 0")
        if not follow and from_block >= self.height():
            return
        for block in deliver_blocks(self._gateway, from_block, follow=follow):
            yield from block_events(block)

    def verify(self, progress: VerifyProgress | None = None) -> VerifyReport:
        checks = ("hash chain", "data hashes", "orderer signatures")
        blocks = list(deliver_blocks(self._gateway, 0))

        def reported() -> Iterator[common_pb2.Block]:
            for number, block in enumerate(blocks):
                yield block
                if progress is not None:
                    progress(number + 1, len(blocks))

        try:
            height = verify_chain(reported(), self._trust)
        except BlockVerificationError as exc:
            return VerifyReport(
                ok=False,
                height=exc.block_number,
                transactions=sum(len(b.data.data) for b in blocks[: exc.block_number]),
                problem=exc.problem,
                block_number=exc.block_number,
                checks=checks,
            )
        return VerifyReport(ok=True, height=height, transactions=sum(len(b.data.data) for b in blocks), checks=checks)

    def close(self) -> None:
        self._gateway.close()


def open_fabric_ledger(settings: LedgerSettings) -> FabricLedger:
    """The factory ``open_ledger`` uses for ``backend = "fabric"``, as ``settings.org``'s identity in
    ``settings.role``: on one machine the network `carefed fabric up` started in ``settings.state_dir``
    (through that org's peer); across hosts the organisation whose own state directory it is (fabric/sites.py)."""
    from fabric_network.fabric import sites
    from fabric_network.fabric.network import NetworkError, connect
    from fabric_network.identities import IdentityError, is_org_site, load_consortium, load_org

    try:
        if is_org_site(settings.state_dir):
            own = load_org(settings.state_dir)
            if settings.org not in (own.name, own.msp_id):
                raise LedgerConfigError(
                    f"org: {settings.state_dir} holds the identities of {own.name} only, not of {settings.org!r}; "
                    f"use --org {own.name} or the state directory of {settings.org}"
                )
            return FabricLedger(
                sites.connect_site(settings.state_dir, settings.role), sites.orderer_trust(settings.state_dir)
            )
        consortium = load_consortium(settings.state_dir)
        org = consortium.org(settings.org)
        # The consortium org has no peer of its own: it reaches the channel through the first hospital's gateway.
        via = org.name if org.kind == "peer" else consortium.hospitals[0].name
        gateway = connect(settings.state_dir, via, settings.role, identity_org=org.name)
    except (IdentityError, NetworkError, sites.SiteError) as exc:
        raise LedgerConfigError(str(exc)) from None
    trust = OrdererTrust(consortium.orderer.msp_id, Path(consortium.orderer.ca_cert).read_bytes())
    return FabricLedger(gateway, trust)
