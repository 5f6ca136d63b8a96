"""What the embedded ledger and its verifier share: the SQLite schema, the chaincode stub over it, and the rules
that make a transaction's record (canonical JSON, the transaction hash, the result record, state writes).

The ledger (``ledger.py``) writes with these rules and the verifier (``verify.py``) re-applies them on replay;
keeping them here lets both import one definition without importing each other.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import sqlite3
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fabric_protos.ledger.queryresult import kv_query_result_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from fabric_network.contracts import CHAINCODE_NAME
from fabric_network.identities import (
    is_low_s,
)
from fabric_network.ledger import (
    LedgerError,
)
from fabric_network.shim import ChaincodeStub, ContractChaincode

T = TypeVar("T")
LEDGER_FILE = "embedded-ledger.sqlite"
BUSY_TIMEOUT_MS = 60_000
SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    number INTEGER PRIMARY KEY,
    header BLOB NOT NULL,
    signature BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS transactions (
    tx_id TEXT PRIMARY KEY,
    block_number INTEGER NOT NULL,
    tx_index INTEGER NOT NULL,
    proposal BLOB NOT NULL,
    signature BLOB NOT NULL,
    result BLOB NOT NULL,
    UNIQUE (block_number, tx_index)
);
CREATE TABLE IF NOT EXISTS state (
    key BLOB PRIMARY KEY,
    value BLOB NOT NULL,
    block_number INTEGER NOT NULL,
    tx_index INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    key BLOB NOT NULL,
    block_number INTEGER NOT NULL,
    tx_index INTEGER NOT NULL,
    tx_id TEXT NOT NULL,
    value BLOB,
    timestamp TEXT NOT NULL,
    PRIMARY KEY (key, block_number, tx_index)
);
"""


def canonical(value: Any) -> bytes:
    """Canonical JSON bytes (sorted keys, compact): what gets hashed and signed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def tx_hash(proposal: bytes, signature: bytes, result: bytes) -> bytes:
    """SHA-256 over the length-prefixed proposal, signature and result (no field can bleed into the next)."""
    digest = hashlib.sha256()
    for part in (proposal, signature, result):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


def b64(data: bytes) -> str:
    """Base64 text of ``data``: how binary payloads sit inside the canonical JSON records."""
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    """The bytes of a base64 field of a stored record."""
    return base64.b64decode(text.encode())


def now_timestamp() -> dict[str, int]:
    """The current time as a protobuf-style ``{seconds, nanos}``: a transaction's timestamp."""
    nanos = time.time_ns()
    return {"seconds": nanos // 1_000_000_000, "nanos": nanos % 1_000_000_000}


def timestamp_text(stamp: dict[str, int]) -> str:
    """RFC 3339 UTC text with nanoseconds, as Fabric renders a history entry's timestamp."""
    moment = dt.datetime.fromtimestamp(stamp["seconds"], tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{stamp['nanos']:09d}Z"


class _AsyncRows:
    """An async iterator over precomputed rows: what the contract API expects from range and history queries."""

    def __init__(self, rows: list[Any]) -> None:
        self._rows = iter(rows)

    def __aiter__(self) -> _AsyncRows:
        return self

    async def __anext__(self) -> Any:
        try:
            return next(self._rows)
        except StopIteration:
            raise StopAsyncIteration from None


class EmbeddedStub(ChaincodeStub):  # type: ignore[misc]  # the library ships no type hints
    """The chaincode stub over SQLite: reads see the committed state (plus earlier transactions of the same
    block), writes are collected for the ledger to commit or discard. The shim's own ``set_event`` and composite
    key helpers are inherited; its gRPC plumbing (``__init__``) is not used."""

    def __init__(
        self,
        db: sqlite3.Connection,
        *,
        channel_id: str,
        tx_id: str,
        function: str,
        args: list[str],
        creator_msp: str,
        creator_cert: bytes,
        timestamp: dict[str, int],
    ) -> None:
        self._db = db
        self.channel_id = channel_id
        self.tx_id = tx_id
        self.chaincode_id_name = CHAINCODE_NAME
        self._function = function
        self._args = args
        self.creator = {"mspid": creator_msp, "idBytes": creator_cert}
        self.tx_timestamp = Timestamp(seconds=timestamp["seconds"], nanos=timestamp["nanos"])
        self._events: list[Any] = []
        self.writes: dict[str, bytes | None] = {}

    def get_function_and_parameters(self) -> tuple[str, list[str]]:
        return self._function, list(self._args)

    async def get_state(self, key: str) -> bytes:
        row = self._db.execute("SELECT value FROM state WHERE key = ?", (key.encode(),)).fetchone()
        return bytes(row[0]) if row else b""

    async def put_state(self, key: str, value: bytes | str) -> None:
        if not key:
            raise ValueError("put_state: key must not be empty")
        self.writes[key] = value.encode() if isinstance(value, str) else bytes(value)

    async def delete_state(self, key: str) -> None:
        self.writes[key] = None

    async def get_state_by_range(self, start_key: str, end_key: str) -> _AsyncRows:
        sql = "SELECT key, value FROM state WHERE key >= ?"
        params: list[bytes] = [start_key.encode()]
        if end_key:
            sql += " AND key < ?"
            params.append(end_key.encode())
        rows = self._db.execute(sql + " ORDER BY key", params).fetchall()
        return _AsyncRows(
            [kv_query_result_pb2.KV(namespace=CHAINCODE_NAME, key=bytes(k).decode(), value=bytes(v)) for k, v in rows]
        )

    async def get_history_for_key(self, key: str) -> _AsyncRows:
        rows = self._db.execute(
            "SELECT tx_id, value, timestamp FROM history WHERE key = ? ORDER BY block_number, tx_index",
            (key.encode(),),
        ).fetchall()
        modifications = []
        for tx, value, stamp in rows:
            moment = dt.datetime.fromisoformat(stamp[:19] + "+00:00")
            ts = Timestamp(seconds=int(moment.timestamp()), nanos=int(stamp[20:29]))
            modifications.append(
                kv_query_result_pb2.KeyModification(
                    tx_id=tx, value=bytes(value or b""), timestamp=ts, is_delete=value is None
                )
            )
        return _AsyncRows(modifications)

    def event(self) -> dict[str, str] | None:
        """The transaction's event as Fabric keeps it: the last one set."""
        if not self._events:
            return None
        last = self._events[-1]
        return {"name": last.event_name, "payload": b64(bytes(last.payload))}


@dataclass(frozen=True)
class Executed:
    """A transaction after execution, ready to commit."""

    tx_id: str
    proposal: bytes
    signature: bytes
    result: bytes
    payload: Any
    writes: dict[str, bytes | None]
    timestamp: str


async def simulate(chaincode: ContractChaincode, stub: EmbeddedStub) -> tuple[Any, EmbeddedStub]:
    """Run one transaction through the contracts' dispatcher: the peer response and the stub with its writes."""
    response = await chaincode.invoke(stub)
    return response, stub


def result_record(response: Any, stub: EmbeddedStub) -> bytes:
    """What a committed transaction stores as its result: status, payload, event and writes, canonically."""
    return canonical(
        {
            "status": response.status,
            "payload": b64(bytes(response.payload)),
            "event": stub.event(),
            "writes": [[k, None if v is None else b64(v)] for k, v in stub.writes.items()],
        }
    )


def write_state(
    db: sqlite3.Connection, writes: dict[str, bytes | None], block_number: int, index: int, tx: str, stamp: str
) -> None:
    """Apply a committed transaction's writes to the world state and the key history."""
    for state_key, value in writes.items():
        raw_key = state_key.encode()
        if value is None:
            db.execute("DELETE FROM state WHERE key = ?", (raw_key,))
        else:
            db.execute(
                "INSERT OR REPLACE INTO state (key, value, block_number, tx_index) VALUES (?, ?, ?, ?)",
                (raw_key, value, block_number, index),
            )
        db.execute(
            "INSERT INTO history (key, block_number, tx_index, tx_id, value, timestamp) VALUES (?, ?, ?, ?, ?, ?)",
            (raw_key, block_number, index, tx, value, stamp),
        )


def run_to_completion(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a contract coroutine to its end, here and now, without an event loop.

    The embedded stub answers every chaincode call from SQLite synchronously, and the contract API awaits
    nothing else, so a transaction's coroutine never suspends: one ``send`` runs it to completion. Unlike an
    event loop of our own, this also works when the caller is itself inside a running loop (FastAPI, Flower),
    where ``run_until_complete`` refuses to nest, and it costs nothing per call.
    """
    try:
        coroutine.send(None)
    except StopIteration as finished:
        result: T = finished.value
        return result
    coroutine.close()
    raise LedgerError("a contract waited on real I/O; the embedded ledger runs contracts synchronously")


def verify_signature(cert_pem: bytes, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` is a valid low-S ECDSA P-256/SHA-256 signature of ``data`` by the certificate's key."""
    try:
        key = x509.load_pem_x509_certificate(cert_pem).public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or not is_low_s(signature):
            return False
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True
