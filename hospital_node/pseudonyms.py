"""The hospital's pseudonym table: MRN → random 256-bit pseudonym, kept only in the node's state directory.

A pseudonym is drawn with `secrets`, never derived from the MRN: HIPAA §164.514(c) forbids re-identification
codes computed from the person's data, and a hash of an MRN falls to brute force over the MRN space. Only the
pseudonym ever reaches the ledger. Deleting the table entry (crypto-shredding) unlinks the patient from every
on-chain record for GDPR Art. 17 while the chain stays intact; SQLite's `secure_delete` overwrites the freed
page so the MRN does not linger in the file.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterable
from pathlib import Path

PSEUDONYM_BYTES = 32  # 256 bits → 64 lowercase hex characters, the ledger's pseudonym format


def new_pseudonym() -> str:
    """A fresh random pseudonym (64 lowercase hex characters)."""
    return secrets.token_hex(PSEUDONYM_BYTES)


class PseudonymTable:
    """Persistent MRN ↔ pseudonym mapping in SQLite; the file is created owner-readable only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not path.exists()
        self._db = sqlite3.connect(path)
        if fresh:
            path.chmod(0o600)
        self._db.execute("PRAGMA secure_delete = ON")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS pseudonyms (mrn TEXT PRIMARY KEY, pseudonym TEXT NOT NULL UNIQUE)")
        self._db.commit()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> PseudonymTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def lookup(self, mrn: str) -> str | None:
        """The patient's pseudonym, or None if the patient has none (never seen, or forgotten)."""
        row = self._db.execute("SELECT pseudonym FROM pseudonyms WHERE mrn = ?", (mrn,)).fetchone()
        return str(row[0]) if row else None

    def pseudonym_for(self, mrn: str) -> str:
        """The patient's pseudonym, drawing and storing a new one on first sight."""
        return self.assign([mrn])[mrn]

    def assign(self, mrns: Iterable[str]) -> dict[str, str]:
        """Pseudonyms for many MRNs in one transaction, drawing new ones where missing."""
        wanted = list(dict.fromkeys(mrns))
        known = self.mapping(wanted)
        fresh = {m: new_pseudonym() for m in wanted if m not in known}
        if fresh:
            with self._db:
                self._db.executemany("INSERT INTO pseudonyms (mrn, pseudonym) VALUES (?, ?)", fresh.items())
        return {**known, **fresh}

    def mapping(self, mrns: Iterable[str]) -> dict[str, str]:
        """Existing pseudonyms for the given MRNs (those without one are absent)."""
        result: dict[str, str] = {}
        batch = list(mrns)
        for start in range(0, len(batch), 500):
            chunk = batch[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for mrn, pseudonym in self._db.execute(
                f"SELECT mrn, pseudonym FROM pseudonyms WHERE mrn IN ({marks})", chunk
            ):
                result[mrn] = pseudonym
        return result

    def forget(self, mrn: str) -> bool:
        """Delete the patient's entry (GDPR Art. 17 unlinking); True if there was one."""
        with self._db:
            deleted = self._db.execute("DELETE FROM pseudonyms WHERE mrn = ?", (mrn,)).rowcount
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return deleted > 0

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM pseudonyms").fetchone()[0])
