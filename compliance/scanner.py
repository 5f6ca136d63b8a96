"""The no-identifier scanner: HIPAA Safe Harbor identifier patterns in what CareFed writes outside a hospital.

CareFed promises that the ledger, its logs and its exports hold pseudonyms and hashes only. This scanner checks
that promise on the bytes actually written (SQLite pages and WAL included, so a value that was written and later
overwritten is still found), for the Safe Harbor (45 CFR §164.514(b)(2)) identifiers a CareFed deployment could
leak: the known MRNs and names of the patients, their dates of birth, phone numbers, e-mail addresses and
SSN-like numbers. Known values are matched exactly; the others by pattern.

It scans only what leaves the hospital's private store: a hospital's own pseudonym table and input data hold
MRNs by design and are not given to it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fabric_network.identities import DOMAIN_SUFFIX

# Pattern identifiers (Safe Harbor (B) dates are matched as the known dates of birth, not as any date: every
# ledger transaction carries a timestamp, which is not a date related to an individual).
PATTERNS: dict[str, re.Pattern[str]] = {
    "e-mail address": re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
    "SSN-like number": re.compile(r"\b\d{3}-\d{2}-\d{4}\b"),
    "phone number": re.compile(r"(?<![\w.])(?:\+1[ .-]?)?\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?![\w.])"),
}


@dataclass(frozen=True)
class Hit:
    """One identifier found: where, and which kind (the value itself is masked so reports do not leak it)."""

    path: Path
    offset: int
    kind: str
    masked: str

    def __str__(self) -> str:
        return f"{self.path} @ byte {self.offset}: {self.kind} ({self.masked})"


def _mask(value: str) -> str:
    return value[:2] + "…" + value[-1:] if len(value) > 4 else "…"


def _files(targets: Iterable[Path]) -> list[Path]:
    found: list[Path] = []
    for target in targets:
        if target.is_file():
            found.append(target)
        elif target.is_dir():
            found.extend(sorted(p for p in target.rglob("*") if p.is_file()))
    return found


@dataclass(frozen=True)
class KnownIdentifiers:
    """The values a demo or deployment knows are identifying: MRNs, names, dates of birth."""

    mrns: Sequence[str] = ()
    names: Sequence[str] = ()
    birth_dates: Sequence[str] = ()

    def patterns(self) -> dict[str, re.Pattern[str]]:
        patterns = {}
        for kind, values in (("MRN", self.mrns), ("name", self.names), ("date of birth", self.birth_dates)):
            if values:
                alternatives = "|".join(re.escape(v) for v in sorted(set(values), key=len, reverse=True))
                patterns[kind] = re.compile(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])")
        return patterns


_CONSORTIUM_DOMAIN = re.compile(rf"@(?:[A-Za-z0-9-]+\.)*{re.escape(DOMAIN_SUFFIX)}(?!\.?[A-Za-z0-9])", re.IGNORECASE)


def _is_consortium_identity(kind: str, value: str) -> bool:
    """Fabric identity names (``Admin@hospital-a.carefed.local``, also inside file names such as
    ``…local-cert.pem``) look like e-mail addresses but name the consortium's own identities, not a person."""
    return kind == "e-mail address" and _CONSORTIUM_DOMAIN.search(value) is not None


def scan(targets: Iterable[Path], known: KnownIdentifiers) -> list[Hit]:
    """Every identifier hit in the files (and directory trees) given, in path order, with byte offsets."""
    patterns = {**known.patterns(), **PATTERNS}
    hits: list[Hit] = []
    for path in _files(targets):
        text = path.read_bytes().decode("latin-1")  # one char per byte: offsets are byte offsets, nothing fails
        for kind, pattern in patterns.items():
            hits.extend(
                Hit(path, m.start(), kind, _mask(m.group()))
                for m in pattern.finditer(text)
                if not _is_consortium_identity(kind, m.group())
            )
    return hits
