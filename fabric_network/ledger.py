"""The `Ledger` interface every CareFed caller uses, its value types, its settings and the backend factory.

Callers never talk to SQLite or to a Fabric peer: they open a ledger (``open_ledger()``, configured by
pydantic-settings, ``backend = "embedded"`` by default) and submit or evaluate contract transactions by name,
``"<Contract>:<function>"`` (docs/ledger.md lists every function and its arguments). Both backends give the
same guarantees:

* ``submit`` returns only once the transaction is committed (durable on disk for the embedded ledger, in a
  validated block on Fabric); a contract refusal raises :class:`ContractRejected` and changes nothing.
* An ``idempotency_key`` makes a submission exactly-once: the key fixes the transaction's nonce, hence its id
  (``tx_id = sha256(nonce ‖ creator)``, Fabric's formula), and a transaction id commits at most once — a
  repeated submission returns the first commit with ``duplicate=True``.
* ``events(from_block)`` replays the contracts' events in commit order from a block number, optionally
  following new blocks.
* ``verify()`` re-checks what the backend can check and names the first bad block and transaction.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

CHANNEL_NAME = "carefed"
NONCE_BYTES = 24


class LedgerError(Exception):
    """Any ledger failure."""


class ContractRejected(LedgerError):
    """The contract refused the transaction; the message names the field and the rule. Nothing was written."""


class LedgerUnavailable(LedgerError):
    """The ledger could not be reached or did not commit in time; the submission may be retried."""


class LedgerConfigError(LedgerError):
    """The ledger is not set up as configured (missing identities, unknown backend, …); the message says how."""


@dataclass(frozen=True)
class Call:
    """One transaction to submit: a function ``"<Contract>:<function>"``, its arguments, an optional key."""

    function: str
    args: tuple[Any, ...] = ()
    idempotency_key: str | None = None


@dataclass(frozen=True)
class TxResult:
    """A committed transaction: its id, block, the contract's return value (parsed JSON) and whether it was a
    repeat of an earlier submission with the same idempotency key."""

    tx_id: str
    block_number: int
    result: Any
    duplicate: bool = False


@dataclass(frozen=True)
class LedgerEvent:
    """A contract event as committed: where (block, tx), when (tx time), by whom (MSP id), name and payload."""

    block_number: int
    tx_id: str
    timestamp: str
    creator_msp: str
    name: str
    payload: dict[str, Any]


#: called as progress(blocks_checked, blocks_total) while a ledger verifies its chain.
VerifyProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of ``verify``: ``ok`` or the first problem with the block and transaction it is in."""

    ok: bool
    height: int
    transactions: int
    problem: str | None = None
    block_number: int | None = None
    tx_id: str | None = None
    checks: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        """One human-readable line."""
        if self.ok:
            return f"ledger verified: {self.height} blocks, {self.transactions} transactions ({', '.join(self.checks)})"
        where = [f"block {self.block_number}"] if self.block_number is not None else []
        if self.tx_id:
            where.append(f"transaction {self.tx_id}")
        return f"ledger verification FAILED at {', '.join(where) or 'ledger'}: {self.problem}"


def encode_argument(value: Any) -> str:
    """Contract arguments travel as strings: str as is, bool as true/false, numbers as text, others as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def decode_result(payload: bytes) -> Any:
    """A contract's return value as callers see it: parsed JSON, else the text, ``None`` when empty."""
    if not payload:
        return None
    text = payload.decode()
    try:
        return json.loads(text)
    except ValueError:
        return text


def transaction_nonce(idempotency_key: str | None) -> bytes:
    """The proposal nonce: derived from the idempotency key (so retries share one tx id), else random."""
    if idempotency_key is None:
        return os.urandom(NONCE_BYTES)
    if not idempotency_key or len(idempotency_key) > 256:
        raise LedgerError("idempotency_key: must be 1-256 characters")
    return hashlib.sha256(b"carefed-idempotency\x00" + idempotency_key.encode()).digest()[:NONCE_BYTES]


def transaction_id(nonce: bytes, serialized_creator: bytes) -> str:
    """Fabric's transaction id: hex SHA-256 of nonce ‖ serialized creator identity."""
    return hashlib.sha256(nonce + serialized_creator).hexdigest()


def serialized_identity(msp_id: str, cert_pem: bytes) -> bytes:
    """The creator as Fabric serialises it (``msp.SerializedIdentity`` protobuf bytes)."""
    from fabric_protos.msp import identities_pb2

    return bytes(identities_pb2.SerializedIdentity(mspid=msp_id, id_bytes=cert_pem).SerializeToString())


class Ledger(ABC):
    """A consortium ledger seen by one signing identity. Use as a context manager, or call ``close``."""

    @property
    @abstractmethod
    def msp_id(self) -> str:
        """The MSP id of the identity this ledger submits as."""

    @abstractmethod
    def submit(self, function: str, *args: Any, idempotency_key: str | None = None) -> TxResult:
        """Run a transaction and return once it is committed; :class:`ContractRejected` if the contract refuses."""

    @abstractmethod
    def submit_batch(self, calls: Sequence[Call]) -> list[TxResult | LedgerError]:
        """Submit several transactions at once (one block where the backend allows); per call, its result or
        its error. Calls are independent: one refusal does not stop the others."""

    @abstractmethod
    def evaluate(self, function: str, *args: Any) -> Any:
        """Run a read-only transaction against the committed state and return its result; nothing is recorded."""

    @abstractmethod
    def events(self, from_block: int = 0, *, follow: bool = False, poll_s: float = 0.2) -> Iterator[LedgerEvent]:
        """Contract events from ``from_block`` on, in commit order; with ``follow``, wait for new blocks until
        the consumer stops iterating or the ledger is closed."""

    @abstractmethod
    def height(self) -> int:
        """Number of blocks (the next block's number)."""

    @abstractmethod
    def block_of(self, tx_id: str) -> int:
        """The number of the block holding a committed transaction; :class:`LedgerError` if unknown."""

    @abstractmethod
    def verify(self, progress: VerifyProgress | None = None) -> VerifyReport:
        """Re-check the chain (hashes, signatures, state) and report the first bad block and transaction;
        ``progress(blocks_checked, blocks_total)`` is called as it goes (a progress bar's feed)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and threads; the ledger object is unusable afterwards."""

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class LedgerSettings(BaseSettings):
    """Which ledger to open and as whom: environment ``CAREFED_LEDGER_*`` or keyword overrides.

    ``org`` names the submitting organisation (``hospital-a``, ``HospitalAMSP`` or ``consortium``) and
    ``role`` which of its identities signs: ``client`` (User1, the default for nodes and services), ``admin``
    or ``node``. Backend-specific settings (the Fabric gateway's endpoint, TLS, …) join this class as the
    backends need them.
    """

    model_config = SettingsConfigDict(env_prefix="CAREFED_LEDGER_", extra="forbid", populate_by_name=True)

    backend: Literal["embedded", "fabric"] = "embedded"
    # CAREFED_STATE_DIR and CAREFED_ORG are the names every `carefed` command reads (docs/configuration.md).
    state_dir: Path = Field(
        default=Path(".carefed"), validation_alias=AliasChoices("CAREFED_LEDGER_STATE_DIR", "CAREFED_STATE_DIR")
    )
    org: str = Field(default="consortium", validation_alias=AliasChoices("CAREFED_LEDGER_ORG", "CAREFED_ORG"))
    role: Literal["client", "admin", "node"] = "client"
    channel: str = CHANNEL_NAME
    chaincode: str = "carefed"
    batch_max_transactions: int = 500


#: backend name → "module:callable" taking LedgerSettings and returning a Ledger. Imported only when chosen,
#: so the embedded default never loads gRPC clients and a Fabric deployment never opens SQLite.
BACKENDS: dict[str, str] = {
    "embedded": "fabric_network.embedded.ledger:open_embedded_ledger",
    "fabric": "fabric_network.fabric.ledger:open_fabric_ledger",
}


def open_ledger(settings: LedgerSettings | None = None, **overrides: Any) -> Ledger:
    """Open the configured ledger backend (``backend = "embedded"`` unless configured otherwise)."""
    config = settings.model_copy(update=overrides) if settings else LedgerSettings(**overrides)
    target = BACKENDS.get(config.backend)
    if target is None:
        raise LedgerConfigError(f"backend: {config.backend!r} is not one of {', '.join(sorted(BACKENDS))}")
    module_name, factory_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise LedgerConfigError(f"backend: {config.backend!r} is not available in this installation") from None
    ledger: Ledger = getattr(module, factory_name)(config)
    return ledger
