"""GDPR Art. 17 at a hospital: crypto-shred a patient's MRN → pseudonym entry and record the erasure on chain.

The ledger keeps every consent and lineage record (it is append-only, and the records hold a random pseudonym
only); what makes them anonymous is that the one place linking the pseudonym to a person — the hospital's
pseudonym table — forgets it. The erasure transaction carries the pseudonym, never the MRN, and withdraws every
consent of the patient in the same transaction.

Order matters for "loses nothing": the erasure is recorded on the ledger first (with an idempotency key, so a
retry returns the first commit), and only then is the table entry deleted. If the ledger is unreachable the
patient is still linked and the command can simply be run again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fabric_network.ledger import ContractRejected, LedgerError, open_ledger
from federation.layout import node_dir_for
from hospital_node.config import NodeConfig, NodeConfigError
from hospital_node.pseudonyms import PseudonymTable


class ErasureError(ValueError):
    """The erasure could not be done; the message names the argument and the fix. Nothing was deleted."""


@dataclass(frozen=True)
class Erasure:
    hospital: str
    tx_id: str
    block_number: int
    repeated: bool  # the ledger had this erasure already (a retry after an interrupted run)


def _node_config(state_dir: Path, hospital: str) -> NodeConfig:
    try:
        return NodeConfig.load(node_dir_for(state_dir, hospital))
    except NodeConfigError as exc:
        raise ErasureError(f"--hospital {hospital}: {exc}") from None


def resolve_pseudonym(state_dir: Path, hospital: str, mrn: str) -> str:
    """The pseudonym of an MRN at its hospital; an error (not naming the MRN) when there is none."""
    config = _node_config(state_dir, hospital)
    with PseudonymTable(config.pseudonym_table) as table:
        pseudonym = table.lookup(mrn)
    if pseudonym is None:
        raise ErasureError(f"MRN: {hospital} has no pseudonym for this patient (never registered, or erased)")
    return pseudonym


def forget_patient(state_dir: Path, hospital: str, mrn: str) -> Erasure:
    """Record the erasure on the ledger as the hospital, then delete the MRN's pseudonym-table entry."""
    config = _node_config(state_dir, hospital)
    pseudonym = resolve_pseudonym(state_dir, hospital, mrn)
    try:
        with open_ledger(
            backend=config.ledger_backend, state_dir=config.ledger_state_dir, org=config.hospital, role="client"
        ) as ledger:
            committed = ledger.submit(
                "ConsentContract:record_erasure", pseudonym, idempotency_key=f"erasure:{pseudonym}"
            )
    except ContractRejected as exc:
        raise ErasureError(f"the ledger refused the erasure, nothing was deleted: {exc}") from None
    except LedgerError as exc:
        raise ErasureError(f"the ledger is unavailable, nothing was deleted (run again later): {exc}") from None
    with PseudonymTable(config.pseudonym_table) as table:
        table.forget(mrn)
    return Erasure(config.hospital, committed.tx_id, committed.block_number, committed.duplicate)
