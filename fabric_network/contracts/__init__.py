"""CareFed's consortium contracts, written once on the Fabric Python contract API for both ledger backends.

One chaincode (``CHAINCODE_NAME``) holds the six contracts; a transaction is named ``"<Contract>:<function>"``,
e.g. ``"ConsentContract:record_consent"``. docs/ledger.md lists every function and its arguments.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from fabric_network.contracts.analytics import AnalyticsContract
from fabric_network.contracts.audit import AuditContract
from fabric_network.contracts.budget import PrivacyBudgetContract
from fabric_network.contracts.common import ContractError, snapshot_root
from fabric_network.contracts.consent import ConsentContract
from fabric_network.contracts.governance import GovernanceContract
from fabric_network.contracts.lineage import LineageContract
from fabric_network.shim import ContractChaincode, FastSchemaSerializer
from privacy import accountant

CHAINCODE_NAME = "carefed"
CONTRACT_CLASSES = (
    ConsentContract,
    LineageContract,
    AuditContract,
    PrivacyBudgetContract,
    GovernanceContract,
    AnalyticsContract,
)
#: The contracts' source files plus the accountant they recompute ε with (its result decides what is written).
CONTRACT_SOURCES = (*sorted(Path(__file__).parent.glob("*.py")), Path(accountant.__file__))
#: SHA-256 over the contracts' source files: the embedded ledger's analogue of a chaincode package id. Recorded
#: in every transaction, so `verify` re-executes exactly the transactions this code version wrote.
CONTRACT_VERSION = hashlib.sha256(
    b"".join(path.name.encode() + b"\0" + path.read_bytes() for path in CONTRACT_SOURCES)
).hexdigest()[:16]


def new_chaincode() -> ContractChaincode:
    """The chaincode that dispatches to every CareFed contract (the same object a Fabric chaincode server runs)."""
    chaincode = ContractChaincode.new_chaincode(*(cls() for cls in CONTRACT_CLASSES))
    chaincode.TransactionSerializer = FastSchemaSerializer()
    return chaincode


def evaluate_functions() -> frozenset[str]:
    """Every read-only transaction as ``"<Contract>:<function>"``: callers may evaluate these, never submit."""
    return frozenset(f"{cls.Name}:{fn}" for cls in CONTRACT_CLASSES for fn in cls().get_evaluate_transactions())


__all__ = [
    "CHAINCODE_NAME",
    "CONTRACT_CLASSES",
    "CONTRACT_VERSION",
    "AnalyticsContract",
    "AuditContract",
    "ConsentContract",
    "ContractError",
    "GovernanceContract",
    "LineageContract",
    "PrivacyBudgetContract",
    "evaluate_functions",
    "new_chaincode",
    "snapshot_root",
]
