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
6. Replaying every committed write in order reproduces the stored world state and key history exactly.

The first failure stops the walk and is reported with its block number and transaction id.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from fabric_network.embedded import timestamp_text, tx_hash, unb64, verify_signature
from fabric_network.identities import ConsortiumMaterial
from fabric_network.ledger import VerifyReport, serialized_identity, transaction_id
from fabric_network.merkle import merkle_root

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


def _compare_state(db: sqlite3.Connection, replay: dict[bytes, tuple[bytes, int, int, str]]) -> None:
    stored = {
        bytes(k): (bytes(v), b, i) for k, v, b, i in db.execute("SELECT key, value, block_number, tx_index FROM state")
    }
    for state_key in sorted(set(stored) | set(replay)):
        expected = replay.get(state_key)
        actual = stored.get(state_key)
        if expected is None or actual is None or expected[:3] != actual:
            block, tx = (expected[1], expected[3]) if expected else (actual[1] if actual else None, None)
            readable = state_key.decode(errors="replace").replace("\x00", "/").strip("/")
            what = "is not written by any committed transaction" if expected is None else "differs from the replay"
            raise _Failure(f"world state entry {readable!r} {what}", block, tx)


def _compare_history(db: sqlite3.Connection, replay: list[tuple[bytes, int, int, str, bytes | None, str]]) -> None:
    stored = [
        (bytes(k), b, i, t, None if v is None else bytes(v), ts)
        for k, b, i, t, v, ts in db.execute(
            "SELECT key, block_number, tx_index, tx_id, value, timestamp FROM history "
            "ORDER BY block_number, tx_index, key"
        )
    ]
    replay_sorted = sorted(replay, key=lambda r: (r[1], r[2], r[0]))
    for expected, actual in zip(replay_sorted, stored, strict=False):
        if expected != actual:
            raise _Failure("a key history entry differs from the replay", expected[1], expected[3])
    if len(stored) != len(replay_sorted):
        longer = stored if len(stored) > len(replay_sorted) else replay_sorted
        extra = longer[min(len(stored), len(replay_sorted))]
        raise _Failure("the key history has entries that no transaction wrote, or lacks some", extra[1], extra[3])


def _replay(
    number: int,
    index: int,
    tx: str,
    proposal_raw: bytes,
    result_raw: bytes,
    state: dict[bytes, tuple[bytes, int, int, str]],
    history: list[tuple[bytes, int, int, str, bytes | None, str]],
) -> None:
    """Apply one committed transaction's writes to the replayed state and history."""
    result = _json(result_raw, "the transaction result", number, tx)
    stamp = _json(proposal_raw, "the transaction proposal", number, tx).get("timestamp")
    moment = timestamp_text(stamp) if stamp else ""
    for state_key, value in result.get("writes", []):
        raw_key, raw_value = state_key.encode(), None if value is None else unb64(value)
        if raw_value is None:
            state.pop(raw_key, None)
        else:
            state[raw_key] = (raw_value, number, index, tx)
        history.append((raw_key, number, index, tx, raw_value, moment))


def verify_embedded(db: sqlite3.Connection, consortium: ConsortiumMaterial) -> VerifyReport:
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
        state: dict[bytes, tuple[bytes, int, int, str]] = {}
        history: list[tuple[bytes, int, int, str, bytes | None, str]] = []
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
                    _replay(number, index, tx, bytes(proposal_raw), bytes(result_raw), state, history)
                    transactions += 1
            except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
                raise _Failure(f"malformed block or transaction ({type(exc).__name__})", number, current_tx) from None
            previous = hashlib.sha256(bytes(header_raw)).hexdigest()
        orphan = db.execute(
            "SELECT tx_id, block_number FROM transactions WHERE block_number >= ? LIMIT 1", (len(blocks),)
        ).fetchone()
        if orphan:
            raise _Failure(f"a transaction belongs to block {orphan[1]}, which is missing", orphan[1], orphan[0])
        _compare_state(db, state)
        _compare_history(db, history)
    except _Failure as failure:
        return VerifyReport(
            ok=False,
            height=len(blocks),
            transactions=transactions,
            problem=failure.problem,
            block_number=failure.block_number,
            tx_id=failure.tx_id,
        )
    return VerifyReport(ok=True, height=len(blocks), transactions=transactions, checks=CHECKS)
