"""A hospital's own copy of the model registry: the consortium's models, each checked against the ledger.

After a run the aggregator sends every connected hospital of the run the final model it registered
(`federation.messages.ModelReplica`, Flower message `evaluate.replicate`). The hospital trusts neither the bytes
nor the hash in the message: it reads the ledger's `LineageContract:register_model` record of the model id, as
its own client identity, and stores the artefact in `<node>/registry/<sha256>.model` only if the bytes hash to
the registered value. The aggregator queues that record in its outbox, so it may reach the ledger a moment after
the message: the hospital waits for it up to the message's `ledger_wait_s`. A mismatch, or no record by then, is
refused — nothing is stored and the reason goes back to the aggregator (its run events) and to the worker's log.

The hospital's clinicians predict from this copy (the service run for the hospital, `CAREFED_API_HOSPITAL`);
`carefed node models --hospital H` lists the copies, each verified again (`verify_copies`). A hospital that was
not connected when a run ended has no copy of that run's model (listed as `missing`): there is no channel on
which a hospital could ask the consortium for it (Flower messages go from the aggregator to the hospitals only),
so it receives a model only when the aggregator replicates one to it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fabric_network.ledger import ContractRejected, Ledger, LedgerError
from federation.messages import STATUS_DECLINED, STATUS_OK, ModelReplica
from federation.registry import ModelRegistry
from hospital_node.config import NodeConfig, open_node_ledger

log = logging.getLogger("carefed.node.replicas")
POLL_S = 0.25

CopyStatus = Literal["ok", "tampered", "not registered", "missing"]


class ReplicaRefused(Exception):
    """A replicated artefact the hospital will not store; the message says why (sent back to the aggregator)."""


def node_registry(node: NodeConfig) -> ModelRegistry:
    """The hospital's copy of the registry, `<node>/registry/`."""
    return ModelRegistry(node.registry_dir)


def registered_sha256(ledger: Ledger, model_id: str) -> str | None:
    """The artefact hash the ledger registered for `model_id`, or None if no such model is registered."""
    try:
        record = ledger.evaluate("LineageContract:read_model", model_id)
    except ContractRejected:
        return None
    return str(record["sha256"])


def accept_replica(ledger: Ledger, registry: ModelRegistry, replica: ModelReplica, *, poll_s: float = POLL_S) -> str:
    """Store a replicated artefact if its bytes are the ones the ledger registered for its model; returns the hash.

    Raises ReplicaRefused, storing nothing, on a hash mismatch or when the ledger holds no record of the model
    after `replica.ledger_wait_s` seconds.
    """
    actual = hashlib.sha256(replica.artifact).hexdigest()
    deadline = time.monotonic() + replica.ledger_wait_s
    while True:
        unreadable = ""
        try:
            registered = registered_sha256(ledger, replica.model_id)
        except LedgerError as exc:  # unavailable for now: keep asking until the deadline
            registered, unreadable = None, f" (last answer: {exc})"
        if registered is not None:
            break
        if time.monotonic() >= deadline:
            raise ReplicaRefused(
                f"model {replica.model_id!r} is not registered on the ledger after waiting {replica.ledger_wait_s:g} s"
                f"{unreadable}; its artefact was refused and nothing stored"
            )
        time.sleep(poll_s)
    if registered != actual:
        raise ReplicaRefused(
            f"model {replica.model_id!r}: the artefact received hashes to {actual}, but the ledger registered "
            f"{registered}; it was refused and nothing stored"
        )
    return registry.store(replica.artifact)


def receive_replica(node: NodeConfig, replica: ModelReplica) -> dict[str, Any]:
    """The node's task for a replication message: the reply's fields (stored, or declined with the reason)."""
    reply: dict[str, Any] = {"hospital": node.hospital, "model-id": replica.model_id}
    try:
        with open_node_ledger(node) as ledger:
            digest = accept_replica(ledger, node_registry(node), replica)
    except ReplicaRefused as exc:
        log.warning("replica refused: %s", exc)
        return {**reply, "status": STATUS_DECLINED, "reason": str(exc)}
    except (LedgerError, OSError, ValueError) as exc:  # the ledger could not be opened, the registry not written
        log.warning("replica of %s not stored: %s", replica.model_id, exc)
        return {**reply, "status": STATUS_DECLINED, "reason": f"replica of {replica.model_id!r} not stored: {exc}"}
    log.info("stored the replica of %s (%s) in %s", replica.model_id, digest, node.registry_dir)
    return {**reply, "status": STATUS_OK, "model-sha256": digest}


@dataclass(frozen=True)
class ModelCopy:
    """One artefact of the hospital's copy (or a model of its runs that it lacks), verified against the ledger."""

    sha256: str
    status: CopyStatus
    model_ids: tuple[str, ...]
    path: Path
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "status": self.status,
            "model_ids": list(self.model_ids),
            "path": str(self.path),
            "detail": self.detail,
        }


def verify_copies(ledger: Ledger, registry: ModelRegistry) -> list[ModelCopy]:
    """Every artefact of the registry copy, checked: `ok` (its bytes hash to its name, which the ledger registered),
    `tampered` (its bytes do not hash to its name) or `not registered` (no model on the ledger has this hash);
    then every model registered for a run of this hospital (`ledger.msp_id`) that the copy lacks, as `missing`."""
    registered: dict[str, list[str]] = {}
    runs: dict[str, str] = {}
    for model in ledger.evaluate("LineageContract:list_models"):
        registered.setdefault(str(model["sha256"]), []).append(str(model["model_id"]))
        runs[str(model["model_id"])] = str(model["run_id"])
    copies: list[ModelCopy] = []
    for stored in registry.stored():
        holding = tuple(registered.get(stored.sha256, ()))
        if not stored.intact:
            status: CopyStatus = "tampered"
            detail = f"its bytes hash to {stored.actual_sha256}: altered after it was stored; do not use it"
        elif not holding:
            status, detail = "not registered", "no model on the ledger has this hash; do not use it"
        else:
            status, detail = "ok", "matches the ledger's registered hash"
        copies.append(ModelCopy(stored.sha256, status, holding, stored.path, detail))
    held = {c.sha256 for c in copies}
    hospitals_of: dict[str, list[str]] = {}
    for sha256, model_ids in registered.items():
        if sha256 in held:
            continue
        ours = []
        for model_id in model_ids:
            run_id = runs[model_id]
            if run_id not in hospitals_of:
                hospitals_of[run_id] = list(ledger.evaluate("LineageContract:read_run", run_id)["hospitals"])
            if ledger.msp_id in hospitals_of[run_id]:
                ours.append(model_id)
        if ours:
            detail = "registered for a run of this hospital, no copy here (not connected at the run's end, or refused)"
            copies.append(ModelCopy(sha256, "missing", tuple(ours), registry.path_of(sha256), detail))
    return copies
