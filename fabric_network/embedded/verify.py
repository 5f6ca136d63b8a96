"""Verification of the embedded ledger: every block, every transaction, and the world state by replay.

Kept apart from the ledger itself so an auditor can read, in one place, exactly what is checked:

1. Block numbering is contiguous from 0 (a deleted or reordered block shows as a gap or a broken chain).
2. Each header's ``previous_hash`` is the SHA-256 of the previous header; the orderer's signature over the
   header is valid, low-S, by a certificate issued by the orderer org's CA in the genesis configuration.
3. The genesis configuration (block 0) equals the consortium's CA certificates on disk — the trust anchor.
4. Each block holds exactly the transactions its header lists, in order: every transaction's hash (over
   proposal, signature and result) equals the header's entry, and the RFC 9162 root of those hashes equals
   the header's ``data_hash``.
5. Each transaction's id is ``sha256(nonce ‖ creator)``; its creator certificate was issued by the CA of the
   MSP id it claims; its signature over the proposal is valid.
6. Replaying the committed transactions in order reproduces the stored world state and key history exactly.
   Transactions written by the current contract version (``CONTRACT_VERSION`` in their proposal) are
   re-executed against the replayed state and must give exactly their recorded result, event and writes;
   those of older versions are replayed from their recorded (hash-covered) writes.

The first failure stops the walk and is reported with its block number and transaction id.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from fabric_network.contracts import CONTRACT_VERSION, new_chaincode
from fabric_network.embedded.store import (
    SCHEMA,
    EmbeddedStub,
    result_record,
    run_to_completion,
    simulate,
    timestamp_text,
    tx_hash,
    unb64,
    verify_signature,
    write_state,
)
from fabric_network.identities import ConsortiumMaterial
from fabric_network.ledger import VerifyProgress, VerifyReport, serialized_identity, transaction_id
from fabric_network.merkle import merkle_root
from fabric_network.shim import ContractChaincode

CHECKS = ("block chain", "orderer signatures", "transaction hashes", "creator signatures", "state replay")


class _Failure(Exception):
    def __init__(self, problem: str, block_number: int | None = None, tx_id: str | None = None) -> None:
        super().__init__(problem)
        self.problem, self.block_number, self.tx_id = problem, block_number, tx_id


@dataclass
class _Trust:
    """CA certificates by MSP id, from the genesis block, and a cache of certificates already checked."""

    cas: dict[str, x509.Certificate]
    orderer_msp: str
    checked: dict[tuple[str, bytes], bool]

    def issued(self, msp_id: str, cert_pem: bytes) -> bool:
        """Whether ``cert_pem`` was issued by the CA of ``msp_id``."""
        cache_key = (msp_id, cert_pem)
        if cache_key not in self.checked:
            ca = self.cas.get(msp_id)
            try:
                if ca is None:
                    raise ValueError("unknown MSP id")
                x509.load_pem_x509_certificate(cert_pem).verify_directly_issued_by(ca)
                self.checked[cache_key] = True
            except Exception:
                self.checked[cache_key] = False
        return self.checked[cache_key]


def _json(raw: bytes, what: str, block: int, tx: str | None = None) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise _Failure(f"{what} is not valid JSON (corrupted bytes)", block, tx) from None


def _trust_from_genesis(db: sqlite3.Connection, consortium: ConsortiumMaterial) -> _Trust:
    row = db.execute("SELECT proposal FROM transactions WHERE block_number = 0 AND tx_index = 0").fetchone()
    if row is None:
        raise _Failure("the genesis configuration transaction is missing", 0)
    proposal = _json(bytes(row[0]), "the genesis configuration", 0)
    config = proposal.get("config", {})
    on_disk = {org.msp_id: Path(org.ca_cert).read_text() for org in (consortium.orderer, *consortium.hospitals)}
    in_genesis = {org["msp_id"]: org["ca_cert"] for org in config.get("orgs", [])}
    if in_genesis != on_disk or config.get("orderer_msp") != consortium.orderer.msp_id:
        raise _Failure(
            f"the genesis configuration differs from the consortium's CA certificates in {consortium.crypto_dir}", 0
        )
    cas = {msp: x509.load_pem_x509_certificate(pem.encode()) for msp, pem in in_genesis.items()}
    return _Trust(cas=cas, orderer_msp=config["orderer_msp"], checked={})


def _check_block(
    db: sqlite3.Connection, trust: _Trust, number: int, header_raw: bytes, signature: bytes, previous: str
) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
    header = _json(header_raw, "the block header", number)
    if header.get("number") != number:
        raise _Failure(f"the header says block {header.get('number')}: blocks were reordered or renumbered", number)
    if header.get("previous_hash") != previous:
        raise _Failure("previous_hash does not match the previous block's header (chain broken)", number)
    orderer = header.get("orderer", {})
    orderer_cert = str(orderer.get("cert", "")).encode()
    if orderer.get("mspid") != trust.orderer_msp or not trust.issued(trust.orderer_msp, orderer_cert):
        raise _Failure("the block is not signed by an orderer of the consortium", number)
    if not verify_signature(orderer_cert, bytes(signature), header_raw):
        raise _Failure("the orderer's signature over the block header is invalid", number)
    rows = db.execute(
        "SELECT tx_id, tx_index, proposal, signature, result FROM transactions "
        "WHERE block_number = ? ORDER BY tx_index",
        (number,),
    ).fetchall()
    listed: list[str] = header.get("tx_hashes", [])
    for position, (tx, index, proposal, tx_signature, result) in enumerate(rows):
        if index != position:
            raise _Failure(f"transaction {position} of the block is missing (the next stored is {index})", number, tx)
        if position >= len(listed):
            raise _Failure(f"transaction {index} is not listed in the block header", number, tx)
        if tx_hash(bytes(proposal), bytes(tx_signature), bytes(result)).hex() != listed[position]:
            raise _Failure(f"transaction {index}'s content differs from its hash in the block header", number, tx)
    if len(rows) != len(listed):
        raise _Failure(f"the header lists {len(listed)} transactions but {len(rows)} are stored", number)
    if merkle_root([bytes.fromhex(h) for h in listed]).hex() != header.get("data_hash"):
        raise _Failure("data_hash is not the Merkle root of the block's transaction hashes", number)
    return rows, header


def _check_transaction(trust: _Trust, number: int, tx: str, proposal_raw: bytes, signature: bytes) -> None:
    proposal = _json(proposal_raw, "the transaction proposal", number, tx)
    if number == 0:
        if tx != hashlib.sha256(proposal_raw).hexdigest():
            raise _Failure("the genesis transaction id does not match its content", number, tx)
        return
    creator = proposal.get("creator", {})
    mspid, cert = str(creator.get("mspid", "")), str(creator.get("cert", "")).encode()
    if proposal.get("tx_id") != tx or tx != transaction_id(
        bytes.fromhex(proposal.get("nonce", "")), serialized_identity(mspid, cert)
    ):
        raise _Failure("the transaction id does not match its nonce and creator", number, tx)
    if not trust.issued(mspid, cert):
        raise _Failure(f"the creator certificate was not issued by the CA of {mspid}", number, tx)
    if not verify_signature(cert, signature, proposal_raw):
        raise _Failure("the creator's signature over the proposal is invalid", number, tx)


@functools.cache
def _chaincode() -> ContractChaincode:
    """One dispatcher per process: building it reflects every contract (tens of ms); it keeps no state."""
    return new_chaincode()


class _Replay:
    """The world state and key history rebuilt from the committed transactions in an in-memory database of the
    ledger's own schema, so each transaction of the current contract version is re-executed against exactly the
    state it saw when it was committed."""

    def __init__(self) -> None:
        self.db = sqlite3.connect(":memory:", isolation_level=None)
        self.db.executescript(SCHEMA)
        self.chaincode = _chaincode()
        self.reexecuted = 0

    def transaction(self, number: int, index: int, tx: str, proposal_raw: bytes, result_raw: bytes) -> None:
        """Re-execute (same contract version) and apply one committed transaction's recorded writes."""
        result = _json(result_raw, "the transaction result", number, tx)
        if number == 0:
            return
        proposal = _json(proposal_raw, "the transaction proposal", number, tx)
        if proposal.get("chaincode_version") == CONTRACT_VERSION:
            stub = EmbeddedStub(
                self.db,
                channel_id=proposal["channel"],
                tx_id=tx,
                function=proposal["function"],
                args=list(proposal["args"]),
                creator_msp=proposal["creator"]["mspid"],
                creator_cert=proposal["creator"]["cert"].encode(),
                timestamp=proposal["timestamp"],
            )
            response, stub = run_to_completion(simulate(self.chaincode, stub))
            if result_record(response, stub) != result_raw:
                raise _Failure("re-executing the contract does not give the recorded result and writes", number, tx)
            self.reexecuted += 1
        writes = {k: None if v is None else unb64(v) for k, v in result["writes"]}
        write_state(self.db, writes, number, index, tx, timestamp_text(proposal["timestamp"]))

    def compare(self, db: sqlite3.Connection) -> None:
        """The stored world state and key history must equal the replay's, row for row."""
        state_sql = "SELECT key, value, block_number, tx_index FROM state"
        replayed = {bytes(k): (bytes(v), b, i) for k, v, b, i in self.db.execute(state_sql)}
        stored = {bytes(k): (bytes(v), b, i) for k, v, b, i in db.execute(state_sql)}
        for state_key in sorted(set(stored) | set(replayed)):
            expected, actual = replayed.get(state_key), stored.get(state_key)
            if expected != actual:
                block, index = (expected or actual or (b"", None, None))[1:]
                writer = db.execute(
                    "SELECT tx_id FROM transactions WHERE block_number = ? AND tx_index = ?", (block, index)
                ).fetchone()
                readable = state_key.decode(errors="replace").replace("\x00", "/").strip("/")
                what = "is not written by any committed transaction" if expected is None else "differs from the replay"
                raise _Failure(f"world state entry {readable!r} {what}", block, writer[0] if writer else None)
        history_sql = (
            "SELECT key, block_number, tx_index, tx_id, value, timestamp FROM history "
            "ORDER BY block_number, tx_index, key"
        )
        replayed_history = self.db.execute(history_sql).fetchall()
        stored_history = db.execute(history_sql).fetchall()
        for expected_row, actual_row in zip(replayed_history, stored_history, strict=False):
            if expected_row != actual_row:
                raise _Failure("a key history entry differs from the replay", expected_row[1], expected_row[3])
        if len(stored_history) != len(replayed_history):
            longer = max(stored_history, replayed_history, key=len)
            extra = longer[min(len(stored_history), len(replayed_history))]
            raise _Failure("the key history has entries that no transaction wrote, or lacks some", extra[1], extra[3])


def verify_embedded(
    db: sqlite3.Connection, consortium: ConsortiumMaterial, progress: VerifyProgress | None = None
) -> VerifyReport:
    """Run every check of the module docstring over one embedded ledger database."""
    blocks = db.execute("SELECT number, header, signature FROM blocks ORDER BY number").fetchall()
    transactions = 0
    try:
        if not blocks:
            raise _Failure("the ledger has no genesis block", 0)
        try:
            trust = _trust_from_genesis(db, consortium)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise _Failure(f"the genesis configuration is malformed ({type(exc).__name__})", 0) from None
        previous = ""
        replay = _Replay()
        for expected_number, (number, header_raw, signature) in enumerate(blocks):
            if number != expected_number:
                raise _Failure(
                    f"block {expected_number} is missing (the next stored block is {number})", expected_number
                )
            current_tx: str | None = None
            try:
                rows, _ = _check_block(db, trust, number, bytes(header_raw), bytes(signature), previous)
                for tx, index, proposal_raw, tx_signature, result_raw in rows:
                    current_tx = tx
                    _check_transaction(trust, number, tx, bytes(proposal_raw), bytes(tx_signature))
                    replay.transaction(number, index, tx, bytes(proposal_raw), bytes(result_raw))
                    transactions += 1
            except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
                raise _Failure(f"malformed block or transaction ({type(exc).__name__})", number, current_tx) from None
            previous = hashlib.sha256(bytes(header_raw)).hexdigest()
            if progress is not None:
                progress(number + 1, len(blocks))
        orphan = db.execute(
            "SELECT tx_id, block_number FROM transactions WHERE block_number >= ? LIMIT 1", (len(blocks),)
        ).fetchone()
        if orphan:
            raise _Failure(f"a transaction belongs to block {orphan[1]}, which is missing", orphan[1], orphan[0])
        replay.compare(db)
    except _Failure as failure:
        return VerifyReport(
            ok=False,
            height=len(blocks),
            transactions=transactions,
            problem=failure.problem,
            block_number=failure.block_number,
            tx_id=failure.tx_id,
        )
    reexecution = f"contract re-execution ({replay.reexecuted} of {transactions - 1} transactions; older contract "
    reexecution += "versions replayed from their recorded writes)"
    return VerifyReport(ok=True, height=len(blocks), transactions=transactions, checks=(*CHECKS, reexecution))
