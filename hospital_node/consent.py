"""The consent filter: only patients whose consent for the run's purpose is active on the ledger train.

Fail closed: if the consent state cannot be read, nobody trains. The ledger knows pseudonyms only; the
hospital maps them back to its records through its local pseudonym table. The pseudonyms actually used are
committed on the ledger as a consent snapshot (RFC 9162 Merkle root of the sorted list), whose root goes into
the round's lineage: a later withdrawal changes the next round's root, which is how an auditor sees it honoured.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from fabric_network.ledger import Call, Ledger, LedgerError
from hospital_node.data import PatientRecords
from hospital_node.pseudonyms import PseudonymTable


class ConsentUnavailable(RuntimeError):
    """The consent state could not be read or committed; the node refuses to train (fail closed)."""


@dataclass(frozen=True)
class ConsentSelection:
    """The records that may train this round and the on-chain commitment to them."""

    records: PatientRecords
    snapshot_id: str
    snapshot_root: str
    excluded: int  # records without active consent (or without a pseudonym: never consented)


def select_consented(
    records: PatientRecords, table: PseudonymTable, ledger: Ledger, purpose: str, snapshot_id: str
) -> ConsentSelection:
    """Keep the records with active consent for `purpose` now, and record their consent snapshot on the ledger."""
    try:
        active = set(ledger.evaluate("ConsentContract:list_active_consents", purpose, ledger.msp_id, ""))
    except (LedgerError, OSError) as exc:
        raise ConsentUnavailable(f"consent state unreadable on the ledger ({exc}); not training (fail closed)") from exc
    by_mrn = table.mapping(records.mrns)
    used = {mrn: p for mrn, p in by_mrn.items() if p in active}
    selected = records.select(used)
    try:
        snapshot = ledger.submit(
            "ConsentContract:create_consent_snapshot",
            snapshot_id,
            purpose,
            json.dumps(sorted(used.values())),
            idempotency_key=f"consent-snapshot:{snapshot_id}",
        ).result
    except (LedgerError, OSError) as exc:
        raise ConsentUnavailable(f"consent snapshot could not be recorded ({exc}); not training (fail closed)") from exc
    return ConsentSelection(
        records=selected,
        snapshot_id=snapshot_id,
        snapshot_root=str(snapshot["root"]),
        excluded=len(records) - len(selected),
    )


CONSENT_VALID_FROM = "2020-01-01T00:00:00Z"


def record_consents(ledger: Ledger, table: PseudonymTable, mrns: Iterable[str], purpose: str) -> dict[str, str]:
    """Give each MRN a pseudonym (if new) and record its active consent for `purpose`; returns MRN → pseudonym."""
    pseudonyms = table.assign(mrns)
    calls = [
        Call(
            "ConsentContract:record_consent",
            (pseudonym, purpose, "research", CONSENT_VALID_FROM, ""),
            idempotency_key=f"consent:{pseudonym}:{purpose}",
        )
        for pseudonym in pseudonyms.values()
    ]
    for start in range(0, len(calls), 500):
        for outcome in ledger.submit_batch(calls[start : start + 500]):
            if isinstance(outcome, LedgerError):
                raise outcome
    return pseudonyms
