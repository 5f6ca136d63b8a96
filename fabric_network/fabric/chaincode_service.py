"""CareFed's contracts as a Fabric chaincode service (CCaaS), with the Python shim's faults corrected.

``fabric-chaincode-python`` 2.5.4 gives the contract API CareFed writes its contracts on, but its shim has five
faults a consent ledger cannot live with (docs/fabric-facts.md §8; each is shown by a test in
tests/fabric/test_shim.py that fails on the upstream shim and passes here):

1. **Events are dropped.** ``fabric_shim/handler.py`` ``Handler.handle_stub_interaction`` builds the COMPLETED
   message without ``chaincode_event``, so ``set_event`` never reaches the peer or the Gateway's
   ChaincodeEvents. → :meth:`CareFedHandler.handle_stub_interaction` attaches the transaction's last event
   (Fabric keeps one event per transaction).
2. **A peer ERROR reply is taken as success.** ``Handler.__ask_peer_and_listen`` returns whatever message
   answers a request, and ``handle_get_state`` returns its payload: the peer's error text becomes the value
   of the key and the transaction reports 200. → :meth:`CareFedHandler._Handler__ask_peer_and_listen` raises
   :class:`PeerRequestError` unless the reply is a RESPONSE, so the contract fails with the peer's message.
3. **Payloads are logged.** Importing the package (``fabric_shim/logging.py``) sets the root logger to DEBUG,
   and the shim logs every proposal, payload and ``put_state`` value at INFO on the ``asyncio`` logger.
   → corrected where CareFed imports the library, :mod:`fabric_network.shim` (its filter drops the shim's own
   records below WARNING at any level), which this module imports it through.
4. **TLS settings are ignored.** ``fabric_shim/server.py`` ``start()`` passes ``key=None``/``cert=None``
   explicitly, so ``CORE_TLS_CLIENT_KEY_PATH``/``..._CERT_PATH`` never apply and the server listens in
   plaintext. → :func:`build_server` reads :class:`ChaincodeServerSettings` and serves TLS (mutual TLS when a
   client CA is given). It also runs on ``asyncio.run`` (``get_event_loop()`` fails on Python 3.14).
5. **Concurrent transactions lose messages.** ``Handler.chat_with_peer`` handles every message from the peer in
   a task of its own, and each task writes to the stream (state requests, COMPLETED) with no coordination; a
   grpc.aio stream takes one write at a time and fails the others (``GRPC_CALL_ERROR_TOO_MANY_OPERATIONS``).
   A lost COMPLETED leaves the peer waiting out ``chaincode.executetimeout`` (30 s): with the peer sending
   transactions concurrently, an evaluate or endorsement now and then ends in DEADLINE_EXCEEDED.
   → :class:`SerialStream` queues the writes of one stream behind a lock.

One addition that is not a fault fix: Fabric 3.x peers take a transaction's writes as one WRITE_BATCH_STATE
message when they announce it in READY (``chaincode.runtimeParams.useWriteBatch``, on by default), where the
upstream shim sends one PUT_STATE round trip per key. :class:`CareFedHandler` buffers a transaction's writes and
sends them in batches before COMPLETED, as Fabric's Go shim does; an audit batch of 100 events then costs one
round trip instead of 100. Semantics do not change: chaincode reads never see the transaction's own writes.

Why a subclass and not CareFed's own shim: every fault sits in one method (or one logger), and the upstream
``ChaincodeStub`` (state, range and history iterators, composite keys, creator and timestamp decoding) is the
larger and correct part; replacing it would duplicate ~500 lines to fix ~40. The price is one override of a
name-mangled private method (fault 2), pinned by the ``fabric-chaincode-python==2.5.*`` requirement and by the
tests, which fail loudly if upstream renames it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
from collections.abc import AsyncIterable, Sequence
from pathlib import Path
from typing import Any

import grpc
from fabric_protos.peer import chaincode_pb2, chaincode_shim_pb2, chaincode_shim_pb2_grpc, proposal_response_pb2
from google.protobuf import empty_pb2, unknown_fields
from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fabric_network.shim import ChaincodeService, ChaincodeStub, ContractChaincode, Handler

_log = logging.getLogger(__name__)

Message = chaincode_shim_pb2.ChaincodeMessage
INTERNAL_ERROR = 500
ERROR_THRESHOLD = 400  # Fabric's shim.ERRORTHRESHOLD: a status from here on fails the endorsement


class PeerRequestError(RuntimeError):
    """The peer answered a state request (GetState, PutState, …) with ERROR."""


def _drop_per_message_noise(record: logging.LogRecord) -> bool:
    """Upstream ``Handler.handle_message`` warns "-->> Look out!" on every message from the peer: noise only."""
    return record.getMessage() != "-->> Look out!"


def write_batch_size(ready_payload: bytes) -> int:
    """How many writes the peer takes per WRITE_BATCH_STATE, from READY's ``ChaincodeAdditionalParams``
    (``use_write_batch`` = field 1, ``max_size_write_batch`` = field 2); 0 when it takes them one by one.

    fabric-protos' Python bindings predate that message, so its two varint fields are read as unknown fields.
    """
    found = unknown_fields.UnknownFieldSet(empty_pb2.Empty.FromString(ready_payload))
    fields = {found[i].field_number: found[i].data for i in range(len(found))}
    return int(fields.get(2, 0)) if fields.get(1) else 0


class CareFedHandler(Handler):  # type: ignore[misc]  # the shim is untyped
    """The upstream stream handler with faults 1 and 2 corrected and write batching (see the module docstring)."""

    def __init__(self, cc_id: str, cc: Any) -> None:
        super().__init__(cc_id, cc)
        self._write_batch = 0  # records per WRITE_BATCH_STATE the peer takes; 0 = one PUT_STATE per write
        self._writes: dict[tuple[str, str], dict[tuple[str, str], Any]] = {}  # (channel, tx) → (coll, key) → record

    async def handle_message_established(self, msg: Any) -> None:
        await super().handle_message_established(msg)
        if msg.type == Message.READY:
            self._write_batch = write_batch_size(msg.payload)

    async def handle_put_state(self, collection: str, key: str, value: bytes, channel_id: str, tx_id: str) -> Any:
        if not self._write_batch:
            return await super().handle_put_state(collection, key, value, channel_id, tx_id)
        record = chaincode_shim_pb2.WriteRecord(
            type=chaincode_shim_pb2.WriteRecord.PUT_STATE, key=key, value=value, collection=collection
        )
        self._writes.setdefault((channel_id, tx_id), {})[(collection, key)] = record
        return None

    async def handle_delete_state(self, collection: str, key: str, channel_id: str, tx_id: str) -> Any:
        if not self._write_batch:
            return await super().handle_delete_state(collection, key, channel_id, tx_id)
        record = chaincode_shim_pb2.WriteRecord(
            type=chaincode_shim_pb2.WriteRecord.DEL_STATE, key=key, collection=collection
        )
        self._writes.setdefault((channel_id, tx_id), {})[(collection, key)] = record
        return None

    async def _send_writes(self, msg: Any, records: list[Any]) -> None:
        """A transaction's buffered writes, in WRITE_BATCH_STATE messages of at most the peer's batch size."""
        for first in range(0, len(records), self._write_batch):
            batch = chaincode_shim_pb2.WriteBatchState(rec=records[first : first + self._write_batch])
            request = Message(
                type=Message.WRITE_BATCH_STATE,
                payload=batch.SerializeToString(),
                txid=msg.txid,
                channel_id=msg.channel_id,
            )
            await self._Handler__ask_peer_and_listen(request, "WriteBatchState")

    async def _Handler__ask_peer_and_listen(self, msg: Any, action: str) -> Any:
        # Overrides the upstream private ``Handler.__ask_peer_and_listen``, the one place every state request
        # passes through, so that an ERROR reply raises instead of being returned as data.
        reply = await Handler._Handler__ask_peer_and_listen(self, msg, action)
        if reply.type != Message.RESPONSE:
            reason = reply.payload.decode("utf-8", errors="replace")
            raise PeerRequestError(f"{action} failed on the peer: {reason}")
        return reply

    async def handle_stub_interaction(self, msg: Any, action: str = "Invoke") -> None:
        """Run one transaction and answer COMPLETED with its response and its event (ERROR if it cannot run)."""
        try:
            stub = ChaincodeStub(
                self, msg.channel_id, msg.txid, chaincode_pb2.ChaincodeInput.FromString(msg.payload), msg.proposal
            )
            run = self.chaincode.init if action.lower() == "init" else self.chaincode.invoke
            response = await run(stub)
        except Exception as exc:  # a malformed proposal: tell the peer rather than leave it waiting
            self._writes.pop((msg.channel_id, msg.txid), None)
            await self.context.write(
                Message(type=Message.ERROR, payload=str(exc).encode(), txid=msg.txid, channel_id=msg.channel_id)
            )
            return
        if not response or not response.status:
            response = proposal_response_pb2.Response(status=INTERNAL_ERROR, message="chaincode returned no status")
        writes = self._writes.pop((msg.channel_id, msg.txid), {})
        if writes and response.status < ERROR_THRESHOLD:  # a refused transaction's writes are dropped anyway
            try:
                await self._send_writes(msg, list(writes.values()))
            except PeerRequestError as exc:
                response = proposal_response_pb2.Response(status=INTERNAL_ERROR, message=str(exc))
        completed = Message(
            type=Message.COMPLETED, payload=response.SerializeToString(), txid=msg.txid, channel_id=msg.channel_id
        )
        events = stub.get_events()
        if events:
            completed.chaincode_event.CopyFrom(events[-1])
        await self.context.write(completed)


class SerialStream:
    """A stream context whose ``write`` s run one at a time (fault 5); everything else is the context's own."""

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._context = context
        self._lock = asyncio.Lock()

    async def write(self, message: Any) -> None:
        async with self._lock:
            await self._context.write(message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class CareFedChaincodeService(ChaincodeService):  # type: ignore[misc]  # the shim is untyped
    """The gRPC ``Chaincode`` service the peer dials, one :class:`CareFedHandler` per connection."""

    async def Connect(self, request_iterator: AsyncIterable[Any], context: grpc.aio.ServicerContext) -> None:
        await CareFedHandler(self._ccid, self._cc).chat_with_peer(request_iterator, SerialStream(context))


class ChaincodeServerSettings(BaseSettings):
    """Settings of one chaincode server, from the environment variables Fabric's CCaaS docs use."""

    model_config = SettingsConfigDict(populate_by_name=True)

    chaincode_id: str = Field(validation_alias=AliasChoices("chaincode_id", "CHAINCODE_ID"))
    address: str = Field(validation_alias=AliasChoices("address", "CHAINCODE_SERVER_ADDRESS"))
    tls_key_file: Path | None = Field(None, validation_alias=AliasChoices("tls_key_file", "CORE_TLS_CLIENT_KEY_PATH"))
    tls_cert_file: Path | None = Field(
        None, validation_alias=AliasChoices("tls_cert_file", "CORE_TLS_CLIENT_CERT_PATH")
    )
    client_ca_file: Path | None = Field(
        None, validation_alias=AliasChoices("client_ca_file", "CORE_PEER_TLS_ROOTCERT_FILE")
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> ChaincodeServerSettings:
        if (self.tls_key_file is None) != (self.tls_cert_file is None):
            raise ValueError(
                "CORE_TLS_CLIENT_KEY_PATH and CORE_TLS_CLIENT_CERT_PATH must be set together (TLS key and cert)"
            )
        if self.client_ca_file is not None and self.tls_key_file is None:
            raise ValueError("CORE_PEER_TLS_ROOTCERT_FILE (mutual TLS) needs CORE_TLS_CLIENT_KEY_PATH/CERT_PATH")
        return self


def build_server(chaincode: ContractChaincode, settings: ChaincodeServerSettings) -> tuple[grpc.aio.Server, int]:
    """A gRPC server for ``chaincode`` on ``settings.address`` (TLS when configured); returns it and its port."""
    server = grpc.aio.server()
    chaincode_shim_pb2_grpc.add_ChaincodeServicer_to_server(
        CareFedChaincodeService(settings.chaincode_id, chaincode), server
    )
    if settings.tls_key_file is None or settings.tls_cert_file is None:
        port = server.add_insecure_port(settings.address)
    else:
        client_ca = settings.client_ca_file.read_bytes() if settings.client_ca_file else None
        credentials = grpc.ssl_server_credentials(
            [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )
        port = server.add_secure_port(settings.address, credentials)
    return server, port


def load_contracts(specs: Sequence[str]) -> ContractChaincode:
    """``module:Class`` specs → one ``ContractChaincode`` serving all of them; none → CareFed's contracts."""
    if not specs:
        from fabric_network.contracts import new_chaincode

        return new_chaincode()
    contracts = []
    for spec in specs:
        module_name, _, class_name = spec.partition(":")
        contracts.append(getattr(importlib.import_module(module_name), class_name)())
    return ContractChaincode.new_chaincode(*contracts)


async def serve(chaincode: ContractChaincode, settings: ChaincodeServerSettings) -> None:
    server, port = build_server(chaincode, settings)
    await server.start()
    _log.warning(
        "chaincode %s serving on port %d (%s)",
        settings.chaincode_id,
        port,
        "mutual TLS" if settings.client_ca_file else "TLS" if settings.tls_key_file else "plaintext",
    )
    try:
        await server.wait_for_termination()
    finally:
        await server.stop(3)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m fabric_network.fabric.chaincode_service [--contract module:Class …]`` with settings from env."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--contract", action="append", help="module:Class of a contract (repeatable; default: CareFed's contracts)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger().setLevel(logging.WARNING)  # whatever imported the library first, this process logs WARNING+
    logging.getLogger("asyncio").addFilter(_drop_per_message_noise)
    settings = ChaincodeServerSettings()  # type: ignore[call-arg]  # fields come from the environment
    asyncio.run(serve(load_contracts(args.contract or ()), settings))


if __name__ == "__main__":
    main()
