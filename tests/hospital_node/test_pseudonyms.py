"""Pseudonyms are random, stable per patient, local to the node, and forgettable."""

import sqlite3
from pathlib import Path

from hospital_node.pseudonyms import PseudonymTable


def test_pseudonyms_are_random_stable_and_forgettable(tmp_path: Path) -> None:
    path = tmp_path / "node" / "pseudonyms.sqlite"
    with PseudonymTable(path) as table:
        first = table.assign(["MRN-1", "MRN-2"])
        assert all(len(p) == 64 and int(p, 16) >= 0 and p == p.lower() for p in first.values())
        assert first["MRN-1"] != first["MRN-2"]
        assert table.pseudonym_for("MRN-1") == first["MRN-1"]
        assert table.forget("MRN-1") is True
        assert table.forget("MRN-1") is False
        assert table.lookup("MRN-1") is None
        again = table.pseudonym_for("MRN-1")
        assert again != first["MRN-1"], "a forgotten patient is never linked to the old pseudonym again"
    assert path.stat().st_mode & 0o077 == 0
    with PseudonymTable(path) as reopened:
        assert reopened.lookup("MRN-2") == first["MRN-2"]


def test_same_mrn_in_two_hospitals_gets_unrelated_pseudonyms(tmp_path: Path) -> None:
    with PseudonymTable(tmp_path / "a.sqlite") as a, PseudonymTable(tmp_path / "b.sqlite") as b:
        assert a.pseudonym_for("MRN-1") != b.pseudonym_for("MRN-1")


def test_forgotten_mrn_is_not_left_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite"
    with PseudonymTable(path) as table:
        table.assign([f"SECRET-MRN-{i:04d}" for i in range(50)])
        table.forget("SECRET-MRN-0007")
    assert b"SECRET-MRN-0007" not in path.read_bytes()
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM pseudonyms").fetchone()[0] == 49
