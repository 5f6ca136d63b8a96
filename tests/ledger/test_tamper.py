"""Tamper evidence: any changed byte, deleted or reordered block makes `verify` fail and name where."""

from __future__ import annotations

import re
import secrets
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from carefed.cli import app
from fabric_network.embedded.ledger import ledger_path
from fabric_network.embedded.verify import verify_embedded
from fabric_network.identities import load_consortium
from fabric_network.ledger import Call, VerifyReport, open_ledger

EVENT = {
    "actor": "svc",
    "role": "service",
    "action": "round.train",
    "object": "run:r1",
    "outcome": "success",
    "purpose": "",
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory, consortium_state: Path) -> Path:
    """A ledger of several blocks (consents, a withdrawal, a batch of audit events), closed and checkpointed."""
    state_dir = tmp_path_factory.mktemp("pristine")
    (state_dir / "crypto").symlink_to(consortium_state / "crypto")
    with open_ledger(state_dir=state_dir, org="hospital-a") as ledger:
        pseudonyms = [secrets.token_hex(32) for _ in range(3)]
        for p in pseudonyms:
            ledger.submit("ConsentContract:record_consent", p, "HRESCH", "research", "2026-01-01T00:00:00Z", "")
        ledger.submit("ConsentContract:withdraw_consent", pseudonyms[0], "HRESCH")
        ledger.submit_batch([Call("AuditContract:append_audit_event", ({**EVENT, "purpose": ""},)) for _ in range(4)])
        ledger.submit("ConsentContract:create_consent_snapshot", "snap-a", "HRESCH", "")
        assert ledger.verify().ok
    return state_dir


@pytest.fixture
def copy(pristine: Path, tmp_path: Path) -> Path:
    target = tmp_path / "state"
    shutil.copytree(pristine, target, symlinks=True)
    return target


@pytest.fixture(scope="module")
def tampered(pristine: Path) -> Callable[..., VerifyReport]:
    """Verify an in-memory copy of the pristine ledger after running the given SQL statements on it."""
    consortium = load_consortium(pristine)
    source = sqlite3.connect(ledger_path(pristine))

    def run(*statements: tuple[str, tuple[object, ...]]) -> VerifyReport:
        db = sqlite3.connect(":memory:")
        source.backup(db)
        for sql, params in statements:
            db.execute(sql, params)
        try:
            return verify_embedded(db, consortium)
        finally:
            db.close()

    return run


def _verify(state_dir: Path) -> VerifyReport:
    with open_ledger(state_dir=state_dir, org="hospital-a") as ledger:
        return ledger.verify()


def _edit(state_dir: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    db = sqlite3.connect(ledger_path(state_dir))
    with db:
        for sql, params in statements:
            db.execute(sql, params)
    db.close()


def _flip(blob: bytes, position: int) -> bytes:
    return blob[:position] + bytes([blob[position] ^ 0x01]) + blob[position + 1 :]


def _rows(state_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(ledger_path(state_dir))
    rows = db.execute(sql).fetchall()
    db.close()
    return rows


def test_the_untouched_ledger_verifies(copy: Path) -> None:
    report = _verify(copy)
    assert report.ok and report.height == 7 and report.transactions == 10


def test_a_ledger_without_genesis_is_reported_not_reinitialised(copy: Path) -> None:
    _edit(copy, ("DELETE FROM blocks WHERE number = 0", ()))
    report = _verify(copy)
    assert not report.ok and report.block_number == 0 and "missing" in (report.problem or "")


@pytest.mark.parametrize("column", ["header", "signature"])
def test_any_changed_byte_of_a_block_is_found(
    pristine: Path, tampered: Callable[..., VerifyReport], column: str
) -> None:
    for number, blob in _rows(pristine, f"SELECT number, {column} FROM blocks"):
        for position in range(0, len(blob), max(1, len(blob) // 9)):
            report = tampered((f"UPDATE blocks SET {column} = ? WHERE number = ?", (_flip(blob, position), number)))
            assert not report.ok and report.block_number == number, (column, number, position, report)


@pytest.mark.parametrize("column", ["proposal", "signature", "result"])
def test_any_changed_byte_of_a_transaction_is_found(
    pristine: Path, tampered: Callable[..., VerifyReport], column: str
) -> None:
    for tx_id, number, blob in _rows(pristine, f"SELECT tx_id, block_number, {column} FROM transactions"):
        for position in range(0, len(blob), max(1, len(blob) // 9)):
            flipped = _flip(blob, position)
            report = tampered((f"UPDATE transactions SET {column} = ? WHERE tx_id = ?", (flipped, tx_id)))
            assert not report.ok and report.block_number == number, (column, position, report)
            if number > 0:
                assert report.tx_id == tx_id, report


def test_any_changed_byte_of_a_state_entry_names_its_key_and_writer(
    pristine: Path, tampered: Callable[..., VerifyReport]
) -> None:
    for key, value, number in _rows(pristine, "SELECT key, value, block_number FROM state"):
        for position in range(0, len(value), max(1, len(value) // 10)):
            report = tampered(("UPDATE state SET value = ? WHERE key = ?", (_flip(value, position), key)))
            assert not report.ok and "world state entry" in (report.problem or "") and report.block_number == number
            assert report.tx_id is not None


def test_a_forged_or_deleted_state_entry_is_found(tampered: Callable[..., VerifyReport]) -> None:
    forged = tampered(("INSERT INTO state VALUES (?, ?, 1, 0)", (b"\x00consent\x00x\x00", b"{}")))
    assert "not written by any committed transaction" in (forged.problem or "")
    deleted = tampered(("DELETE FROM state WHERE key = (SELECT MIN(key) FROM state)", ()))
    assert "world state entry" in (deleted.problem or "")


def test_a_changed_history_entry_is_found(tampered: Callable[..., VerifyReport]) -> None:
    report = tampered(("UPDATE history SET value = X'7B7D' WHERE rowid = (SELECT MIN(rowid) FROM history)", ()))
    assert not report.ok and "history" in (report.problem or "")


@pytest.mark.parametrize(
    ("tamper", "bad_block", "words"),
    [
        ([("DELETE FROM blocks WHERE number = 3", ())], 3, "missing"),
        ([("DELETE FROM blocks WHERE number = 6", ())], 6, "missing"),
        ([("DELETE FROM blocks WHERE number = 0", ())], 0, "missing"),
        (
            [
                ("UPDATE blocks SET number = -1 WHERE number = 2", ()),
                ("UPDATE blocks SET number = 2 WHERE number = 3", ()),
                ("UPDATE blocks SET number = 3 WHERE number = -1", ()),
            ],
            2,
            "reordered",
        ),
        ([("DELETE FROM transactions WHERE block_number = 5 AND tx_index = 2", ())], 5, "missing"),
    ],
    ids=["delete-middle-block", "delete-last-block", "delete-genesis", "swap-blocks", "delete-transaction"],
)
def test_deleted_or_reordered_blocks_are_found(
    tampered: Callable[..., VerifyReport], tamper: list[tuple[str, tuple[object, ...]]], bad_block: int, words: str
) -> None:
    report = tampered(*tamper)
    assert not report.ok and report.block_number == bad_block and words in (report.problem or ""), report


def test_cli_verify_exits_non_zero_and_names_the_block(copy: Path) -> None:
    ok = CliRunner().invoke(app, ["ledger", "verify", "--state-dir", str(copy)])
    assert ok.exit_code == 0 and "ledger verified" in ok.output
    _edit(copy, ("DELETE FROM blocks WHERE number = 4", ()))
    failed = CliRunner().invoke(app, ["ledger", "verify", "--state-dir", str(copy)])
    assert failed.exit_code == 1 and "block 4" in failed.output


def test_an_insider_with_the_orderer_key_cannot_forge_a_contract_result(
    pristine: Path, tampered: Callable[..., VerifyReport]
) -> None:
    """Rewrite the last transaction's result and state consistently and re-sign its block with the orderer's
    key: every hash and signature checks out, but re-executing the contract exposes the forged writes."""
    import base64
    import json

    from fabric_network.embedded.store import canonical, tx_hash
    from fabric_network.identities import identity_for
    from fabric_network.merkle import merkle_root

    ((number, header_raw),) = _rows(pristine, "SELECT number, header FROM blocks ORDER BY number DESC LIMIT 1")
    ((tx_id, proposal, signature, result_raw),) = _rows(
        pristine, f"SELECT tx_id, proposal, signature, result FROM transactions WHERE block_number = {number}"
    )
    result = json.loads(result_raw)
    key, value = result["writes"][0]
    snapshot = json.loads(base64.b64decode(value))
    snapshot["count"] += 1  # claim one more consented patient than the ledger had
    forged_value = canonical(snapshot)
    result["writes"][0][1] = base64.b64encode(forged_value).decode()
    forged_result = canonical(result)
    header = json.loads(header_raw)
    header["tx_hashes"] = [tx_hash(proposal, signature, forged_result).hex()]
    header["data_hash"] = merkle_root([bytes.fromhex(h) for h in header["tx_hashes"]]).hex()
    forged_header = canonical(header)
    orderer = identity_for(load_consortium(pristine), "consortium", "node")
    report = tampered(
        ("UPDATE transactions SET result = ? WHERE tx_id = ?", (forged_result, tx_id)),
        (
            "UPDATE blocks SET header = ?, signature = ? WHERE number = ?",
            (forged_header, orderer.sign(forged_header), number),
        ),
        ("UPDATE state SET value = ? WHERE key = ?", (forged_value, key.encode())),
        ("UPDATE history SET value = ? WHERE key = ? AND block_number = ?", (forged_value, key.encode(), number)),
    )
    assert not report.ok and report.block_number == number and report.tx_id == tx_id
    assert "re-executing the contract" in (report.problem or ""), "every hash and signature passed before it"


def _other_tx_id(tx_id: str) -> str:
    """A well-formed transaction id that is not this one (last hex digit changed)."""
    return tx_id[:-1] + ("0" if tx_id[-1] != "0" else "1")


def test_a_changed_transaction_id_is_found_and_named(pristine: Path, tampered: Callable[..., VerifyReport]) -> None:
    for tx_id, number in _rows(pristine, "SELECT tx_id, block_number FROM transactions"):
        report = tampered(("UPDATE transactions SET tx_id = ? WHERE tx_id = ?", (_other_tx_id(tx_id), tx_id)))
        cause = "genesis transaction id does not match its content" if number == 0 else "does not match its nonce"
        assert not report.ok and report.block_number == number and cause in (report.problem or ""), report
        assert report.tx_id == _other_tx_id(tx_id), "the report names the stored (altered) id"


def test_a_transaction_moved_to_another_block_or_position_is_found(
    pristine: Path, tampered: Callable[..., VerifyReport]
) -> None:
    rows = _rows(pristine, "SELECT tx_id, block_number, tx_index FROM transactions")
    blocks = {number for _, number, _ in rows}
    for tx_id, number, index in rows:
        moved = tampered(("UPDATE transactions SET block_number = ? WHERE tx_id = ?", (number + 100, tx_id)))
        assert not moved.ok and moved.block_number == number, moved
        assert re.search(r"is missing|lists \d+ transactions but \d+ are stored", moved.problem or ""), moved
        reindexed = tampered(("UPDATE transactions SET tx_index = ? WHERE tx_id = ?", (index + 100, tx_id)))
        assert not reindexed.ok and reindexed.block_number == number, reindexed
        assert "is missing" in (reindexed.problem or "") or "not listed" in (reindexed.problem or ""), reindexed
    # Appended to an earlier block that exists: that block's header does not list it.
    tx_id, number, _ = rows[-1]
    target = min(blocks - {number})
    free = sum(1 for _, block, _ in rows if block == target)
    report = tampered(("UPDATE transactions SET block_number = ?, tx_index = ? WHERE tx_id = ?", (target, free, tx_id)))
    assert not report.ok and report.block_number == target and "not listed" in (report.problem or ""), report


def test_two_transactions_swapped_within_a_block_are_found(
    pristine: Path, tampered: Callable[..., VerifyReport]
) -> None:
    ((number,),) = _rows(pristine, "SELECT block_number FROM transactions GROUP BY block_number HAVING COUNT(*) > 1")
    (first, _), (second, _) = _rows(
        pristine, f"SELECT tx_id, tx_index FROM transactions WHERE block_number = {number} AND tx_index < 2"
    )
    report = tampered(
        ("UPDATE transactions SET tx_index = -1 WHERE tx_id = ?", (first,)),
        ("UPDATE transactions SET tx_index = 0 WHERE tx_id = ?", (second,)),
        ("UPDATE transactions SET tx_index = 1 WHERE tx_id = ?", (first,)),
    )
    assert not report.ok and report.block_number == number and report.tx_id == second
    assert "content differs from its hash in the block header" in (report.problem or ""), report


def test_a_changed_state_key_or_position_is_found_and_names_the_key(
    pristine: Path, tampered: Callable[..., VerifyReport]
) -> None:
    for key, number, index in _rows(pristine, "SELECT key, block_number, tx_index FROM state"):
        readable = bytes(key).decode().replace("\x00", "/").strip("/")
        renamed = tampered(("UPDATE state SET key = ? WHERE key = ?", (bytes(key) + b"x", key)))
        problem = renamed.problem or ""
        assert not renamed.ok and readable in problem and "world state entry" in problem, renamed
        for column, value in (("block_number", number + 1), ("tx_index", index + 1)):
            report = tampered((f"UPDATE state SET {column} = ? WHERE key = ?", (value, key)))
            assert not report.ok and f"world state entry {readable!r} differs from the replay" == report.problem, (
                column,
                report,
            )


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("timestamp", "2020-01-01T00:00:00Z"),
        ("tx_id", "0" * 64),
        ("key", b"\x00consent\x00forged\x00"),
        ("tx_index", 99),
        ("block_number", 99),
        ("value", None),
    ],
)
def test_every_column_of_a_history_entry_is_covered(
    pristine: Path, tampered: Callable[..., VerifyReport], column: str, value: object
) -> None:
    for rowid, number, tx_id in _rows(pristine, "SELECT rowid, block_number, tx_id FROM history"):
        report = tampered((f"UPDATE history SET {column} = ? WHERE rowid = ?", (value, rowid)))
        assert not report.ok, (column, rowid)
        assert report.problem in (
            "a key history entry differs from the replay",
            "the key history has entries that no transaction wrote, or lacks some",
        ), report
        assert report.block_number is not None and report.tx_id is not None
        assert (report.block_number, report.tx_id) <= (number, tx_id) or column in ("key", "block_number"), report
