"""The embedded ledger (CareFed's default backend): the real contracts, in-process, over SQLite in WAL mode.

It runs the very classes a Fabric peer would run (``fabric_network.contracts``) through the contract API's own
dispatcher, with a stub that answers the chaincode calls the contracts make from SQLite. On top it keeps what
makes a ledger a ledger:

* **Signed transactions.** Each transaction's proposal (channel, chaincode, tx id, nonce, timestamp, creator
  MSP id and certificate, function, arguments) is signed by the submitting identity (ECDSA P-256, low S).
* **Blocks.** Committed transactions are cut into blocks. A block header carries its number, the previous
  header's SHA-256, the hash of every transaction in order (a transaction's hash covers proposal, signature
  and result: status, payload, event, writes), their RFC 9162 Merkle root, and the orderer identity's
  certificate; the orderer signs the header. Block 0 is the genesis block carrying the consortium's
  configuration (every org's MSP id and CA certificate), signed the same way.
* **Durability.** ``synchronous=FULL`` in WAL mode: a submit returns after its block's commit is on disk.
  Several processes may share one ledger file; SQLite's write lock orders their blocks.
* **Verification.** ``verify`` walks every block (numbering, hash chain, header signature, certificates chained
  to the genesis CAs, each transaction's id, signature and hash) and replays every committed write, comparing
  the result with the stored world state and history.

Semantics follow Fabric's: a transaction reads the committed state (not its own writes); a refused transaction
writes nothing and is not recorded; a repeated transaction id (same idempotency key) is not executed twice.

Trust note: the embedded orderer's key is read from the state directory by every process on the host, so
this backend proves integrity against later tampering, not against the host operator; the Fabric backend
spreads that trust over the consortium.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fabric_network.contracts import CHAINCODE_NAME, CONTRACT_VERSION, evaluate_functions, new_chaincode
from fabric_network.embedded.store import (
    BUSY_TIMEOUT_MS,
    LEDGER_FILE,
    SCHEMA,
    EmbeddedStub,
    Executed,
    canonical,
    now_timestamp,
    result_record,
    run_to_completion,
    simulate,
    timestamp_text,
    tx_hash,
    unb64,
    write_state,
)
from fabric_network.embedded.verify import verify_embedded
from fabric_network.identities import (
    ConsortiumMaterial,
    SigningIdentity,
    identity_for,
    load_consortium,
)
from fabric_network.ledger import (
    Call,
    ContractRejected,
    Ledger,
    LedgerConfigError,
    LedgerError,
    LedgerEvent,
    LedgerSettings,
    TxResult,
    VerifyProgress,
    VerifyReport,
    decode_result,
    encode_argument,
    serialized_identity,
    transaction_id,
    transaction_nonce,
)
from fabric_network.merkle import merkle_root
from fabric_network.shim import ContractChaincode


class EmbeddedLedger(Ledger):
    """The in-process ledger; see the module docstring. Thread-safe (one lock per instance)."""

    def __init__(
        self,
        path: Path,
        identity: SigningIdentity,
        orderer: SigningIdentity,
        consortium: ConsortiumMaterial,
        *,
        channel: str = "carefed",
        batch_max_transactions: int = 500,
    ) -> None:
        self.path = path
        self._identity = identity
        self._orderer = orderer
        self._consortium = consortium
        self._channel = channel
        self._batch_max = batch_max_transactions
        self._serialized_creator = serialized_identity(identity.msp_id, identity.cert_pem)
        self._evaluate_only = evaluate_functions()
        self._lock = threading.RLock()
        self._closed = False
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
        try:
            self._prepare_database()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            if isinstance(exc, sqlite3.OperationalError):  # locked, disk full, …: not the file's fault
                raise
            raise LedgerError(  # a damaged or foreign file: the user's to fix, not a traceback
                f"{path}: not a readable ledger database ({exc}); restore the file from your backup "
                "(CareFed leaves it as it is)"
            ) from exc
        self._chaincode: ContractChaincode = new_chaincode()
        self._ensure_genesis()

    def _prepare_database(self) -> None:
        """WAL mode, full sync, the busy timeout and the schema; retried while another opener holds the lock.

        Switching a new database into WAL needs an exclusive lock and SQLite answers "database is locked" at once
        (no busy handler) when another connection opens the same new file at that moment, so concurrent first
        openers wait here for up to the busy timeout instead of failing.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                self._db.executescript(SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    # --- Ledger interface -------------------------------------------------------------------------------------

    @property
    def msp_id(self) -> str:
        return self._identity.msp_id

    def submit(self, function: str, *args: Any, idempotency_key: str | None = None) -> TxResult:
        outcome = self.submit_batch([Call(function, tuple(args), idempotency_key)])[0]
        if isinstance(outcome, LedgerError):
            raise outcome
        return outcome

    def submit_batch(self, calls: Sequence[Call]) -> list[TxResult | LedgerError]:
        outcomes: list[TxResult | LedgerError] = []
        for start in range(0, len(calls), self._batch_max):
            outcomes += self._commit_block(calls[start : start + self._batch_max])
        return outcomes

    def evaluate(self, function: str, *args: Any) -> Any:
        with self._lock:
            self._check_open()
            tx = transaction_id(transaction_nonce(None), self._serialized_creator)
            stub = self._stub(tx, function, [encode_argument(a) for a in args], now_timestamp())
            # One read transaction: every read of the evaluation sees the same committed snapshot (WAL), even
            # while another process commits blocks.
            self._db.execute("BEGIN")
            try:
                response = run_to_completion(self._chaincode.invoke(stub))
            finally:
                self._db.execute("COMMIT")
        if response.status != 200:
            raise ContractRejected(f"{function}: {response.message}")
        return decode_result(response.payload)

    def events(self, from_block: int = 0, *, follow: bool = False, poll_s: float = 0.2) -> Iterator[LedgerEvent]:
        if from_block < 0:
            raise LedgerError("from_block: must be ≥ 0")
        number = from_block
        while True:
            with self._lock:
                self._check_open()
                exists = self._db.execute("SELECT 1 FROM blocks WHERE number = ?", (number,)).fetchone()
                rows = self._db.execute(
                    "SELECT tx_id, proposal, result FROM transactions WHERE block_number = ? ORDER BY tx_index",
                    (number,),
                ).fetchall()
            if not exists:
                if not follow:
                    return
                time.sleep(poll_s)
                continue
            for tx, proposal, result in rows:
                event = json.loads(result)["event"]
                if event is None:
                    continue
                header = json.loads(proposal)
                yield LedgerEvent(
                    block_number=number,
                    tx_id=tx,
                    timestamp=timestamp_text(header["timestamp"]),
                    creator_msp=header["creator"]["mspid"],
                    name=event["name"],
                    payload=json.loads(unb64(event["payload"])),
                )
            number += 1

    def height(self) -> int:
        with self._lock:
            self._check_open()
            row = self._db.execute("SELECT COALESCE(MAX(number) + 1, 0) FROM blocks").fetchone()
        return int(row[0])

    def block_of(self, tx_id: str) -> int:
        with self._lock:
            self._check_open()
            row = self._db.execute("SELECT block_number FROM transactions WHERE tx_id = ?", (tx_id,)).fetchone()
        if row is None:
            raise LedgerError(f"tx_id: no committed transaction {tx_id}")
        return int(row[0])

    def verify(self, progress: VerifyProgress | None = None) -> VerifyReport:
        with self._lock:
            self._check_open()
            # One read transaction: the whole check sees one committed snapshot while other processes go on
            # committing blocks (without it, a block committed mid-walk would look like forged state).
            self._db.execute("BEGIN")
            try:
                return verify_embedded(self._db, self._consortium, progress)
            finally:
                self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._db.close()

    # --- inspection for `carefed ledger status` and `history` ----------------------------------------------------

    def describe(self) -> dict[str, str]:
        """Facts for an operator: file, size, transactions, last block time, submitting identity."""
        with self._lock:
            self._check_open()
            transactions = self._db.execute("SELECT COUNT(*) FROM transactions").fetchone()[0]
            last = self._db.execute("SELECT header FROM blocks ORDER BY number DESC LIMIT 1").fetchone()
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
        return {
            "file": str(self.path),
            "size (bytes, with WAL)": str(size),
            "transactions (incl. genesis)": str(transactions),
            "last block time": json.loads(last[0])["timestamp"] if last else "-",
            "identity": f"{self._identity.name} ({self._identity.msp_id})",
        }

    def key_history(self, state_key: str) -> list[dict[str, Any]]:
        """Every committed version of a state key, oldest first (block, tx, time, value or None if deleted)."""
        with self._lock:
            self._check_open()
            rows = self._db.execute(
                "SELECT block_number, tx_index, tx_id, timestamp, value FROM history WHERE key = ? "
                "ORDER BY block_number, tx_index",
                (state_key.encode(),),
            ).fetchall()
        return [
            {
                "block_number": block,
                "tx_index": index,
                "tx_id": tx,
                "timestamp": stamp,
                "value": None if value is None else decode_result(bytes(value)),
            }
            for block, index, tx, stamp, value in rows
        ]

    # --- internals -----------------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise LedgerError("the ledger is closed")

    def _stub(self, tx: str, function: str, args: list[str], stamp: dict[str, int]) -> EmbeddedStub:
        """A stub for one transaction of this ledger's identity over its database."""
        return EmbeddedStub(
            self._db,
            channel_id=self._channel,
            tx_id=tx,
            function=function,
            args=args,
            creator_msp=self._identity.msp_id,
            creator_cert=self._identity.cert_pem,
            timestamp=stamp,
        )

    async def _execute(self, call: Call, tx: str, nonce: bytes) -> Executed | ContractRejected:
        """Simulate one transaction against the state as of now (inside the open block's SQL transaction)."""
        args = [encode_argument(a) for a in call.args]
        stamp = now_timestamp()
        response, stub = await simulate(self._chaincode, self._stub(tx, call.function, args, stamp))
        if response.status != 200:
            return ContractRejected(f"{call.function}: {response.message}")
        proposal = canonical(
            {
                "channel": self._channel,
                "chaincode": CHAINCODE_NAME,
                "chaincode_version": CONTRACT_VERSION,
                "tx_id": tx,
                "nonce": nonce.hex(),
                "timestamp": stamp,
                "creator": {"mspid": self._identity.msp_id, "cert": self._identity.cert_pem.decode()},
                "function": call.function,
                "args": args,
            }
        )
        return Executed(
            tx_id=tx,
            proposal=proposal,
            signature=self._identity.sign(proposal),
            result=result_record(response, stub),
            payload=decode_result(bytes(response.payload)),
            writes=stub.writes,
            timestamp=timestamp_text(stamp),
        )

    def _commit_block(self, calls: Sequence[Call]) -> list[TxResult | LedgerError]:
        """Execute ``calls`` in order and commit the accepted ones as one block, durably, under the write lock."""
        with self._lock:
            self._check_open()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                number, previous = self._head()
                outcomes, executed = run_to_completion(self._execute_block(calls, number))
                if executed:
                    self._append_block(number, previous, executed)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return [TxResult(o.tx_id, number, o.payload) if isinstance(o, Executed) else o for o in outcomes]

    async def _execute_block(
        self, calls: Sequence[Call], number: int
    ) -> tuple[list[TxResult | LedgerError | Executed], list[Executed]]:
        """Run each call against the state left by the ones before it; apply the accepted ones' writes."""
        outcomes: list[TxResult | LedgerError | Executed] = []
        executed: list[Executed] = []
        in_block: set[str] = set()
        for call in calls:
            if call.function in self._evaluate_only:
                outcomes.append(LedgerError(f"{call.function}: is read-only; use evaluate"))
                continue
            try:
                nonce = transaction_nonce(call.idempotency_key)
            except LedgerError as exc:
                outcomes.append(exc)
                continue
            tx = transaction_id(nonce, self._serialized_creator)
            prior = self._committed(tx)
            if prior is not None or tx in in_block:
                outcomes.append(prior or LedgerError("idempotency_key: repeated within one batch"))
                continue
            done = await self._execute(call, tx, nonce)
            if isinstance(done, Executed):
                self._apply(done, number, len(executed))
                executed.append(done)
                in_block.add(tx)
            outcomes.append(done)
        return outcomes, executed

    def _committed(self, tx: str) -> TxResult | None:
        row = self._db.execute("SELECT block_number, result FROM transactions WHERE tx_id = ?", (tx,)).fetchone()
        if row is None:
            return None
        payload = decode_result(unb64(json.loads(row[1])["payload"]))
        return TxResult(tx, int(row[0]), payload, duplicate=True)

    def _head(self) -> tuple[int, str]:
        row = self._db.execute("SELECT number, header FROM blocks ORDER BY number DESC LIMIT 1").fetchone()
        if row is None:
            return 0, ""
        return int(row[0]) + 1, hashlib.sha256(bytes(row[1])).hexdigest()

    def _apply(self, done: Executed, block_number: int, index: int) -> None:
        write_state(self._db, done.writes, block_number, index, done.tx_id, done.timestamp)
        self._db.execute(
            "INSERT INTO transactions (tx_id, block_number, tx_index, proposal, signature, result) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (done.tx_id, block_number, index, done.proposal, done.signature, done.result),
        )

    def _append_block(self, number: int, previous: str, transactions: Sequence[Executed]) -> None:
        hashes_hex = [tx_hash(t.proposal, t.signature, t.result).hex() for t in transactions]
        header = canonical(
            {
                "number": number,
                "previous_hash": previous,
                "tx_hashes": hashes_hex,
                "data_hash": merkle_root([bytes.fromhex(h) for h in hashes_hex]).hex(),
                "timestamp": timestamp_text(now_timestamp()),
                "orderer": {"mspid": self._orderer.msp_id, "cert": self._orderer.cert_pem.decode()},
            }
        )
        self._db.execute(
            "INSERT INTO blocks (number, header, signature) VALUES (?, ?, ?)",
            (number, header, self._orderer.sign(header)),
        )

    def _ensure_genesis(self) -> None:
        """Write block 0 (the consortium configuration) once; every process checks under the write lock."""
        with self._lock:
            if self._db.execute("SELECT 1 FROM blocks LIMIT 1").fetchone():
                return  # never write a genesis into an existing chain: a missing block 0 is for verify to report
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if self._db.execute("SELECT 1 FROM blocks LIMIT 1").fetchone() is None:
                    config = genesis_config(self._consortium, self._channel)
                    proposal = canonical({"type": "config", "config": config})
                    stamp = now_timestamp()
                    done = Executed(
                        tx_id=hashlib.sha256(proposal).hexdigest(),
                        proposal=proposal,
                        signature=self._orderer.sign(proposal),
                        result=canonical({"status": 200, "payload": "", "event": None, "writes": []}),
                        payload=None,
                        writes={},
                        timestamp=timestamp_text(stamp),
                    )
                    self._apply(done, 0, 0)
                    self._append_block(0, "", [done])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise


def composite_key(object_type: str, attributes: Sequence[str]) -> str:
    """Fabric's composite key (``\\x00type\\x00attr…\\x00``), as the contracts' ``create_composite_key`` builds it."""
    return "\x00" + "".join(part + "\x00" for part in (object_type, *attributes))


def genesis_config(consortium: ConsortiumMaterial, channel: str) -> dict[str, Any]:
    """The configuration block 0 commits to: channel, chaincode and each org's MSP id and CA certificate."""
    return {
        "channel": channel,
        "chaincode": CHAINCODE_NAME,
        "orderer_msp": consortium.orderer.msp_id,
        "orgs": [
            {"msp_id": org.msp_id, "ca_cert": Path(org.ca_cert).read_text()}
            for org in (consortium.orderer, *consortium.hospitals)
        ],
    }


def ledger_path(state_dir: Path) -> Path:
    """Where the embedded ledger of a state directory lives."""
    return Path(state_dir) / "ledger" / LEDGER_FILE


def open_embedded_ledger(settings: LedgerSettings) -> EmbeddedLedger:
    """The factory ``open_ledger`` uses for ``backend = "embedded"``."""
    from fabric_network.identities import IdentityError

    try:
        consortium = load_consortium(settings.state_dir)
        identity = identity_for(consortium, settings.org, settings.role)
        orderer = identity_for(consortium, consortium.orderer.name, "node")
    except IdentityError as exc:
        raise LedgerConfigError(str(exc)) from None
    return EmbeddedLedger(
        ledger_path(settings.state_dir),
        identity,
        orderer,
        consortium,
        channel=settings.channel,
        batch_max_transactions=settings.batch_max_transactions,
    )
