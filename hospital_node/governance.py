"""The hospital's say in a run: read a run proposal, approve or reject it, and refuse to train without approval.

Why on the node: the rule that a run starts only with a majority lives in the contract, but a majority cannot
make *this* hospital's data train. The node trains only in a started run that its own hospital approved, and
only with the DP target, purpose and rounds that were approved (the aggregator could ask for others).
"""

from __future__ import annotations

from typing import Any

from fabric_network.contracts.lineage import not_approved_message
from fabric_network.ledger import Ledger, LedgerError


class NotApproved(Exception):
    """This hospital may not train in the run; the message says why and names who has not approved."""


def read_run(ledger: Ledger, run_id: str) -> dict[str, Any]:
    """The run proposal on the ledger (with its votes and status); `NotApproved` if it is not there."""
    try:
        run: dict[str, Any] = ledger.evaluate("LineageContract:read_run", run_id)
    except LedgerError as exc:
        raise NotApproved(f"run {run_id} is not readable on the ledger ({exc}); not training (fail closed)") from exc
    return run


def summary(run: dict[str, Any]) -> list[tuple[str, str]]:
    """The proposal as (label, value) rows a hospital's data protection officer can read before voting."""
    dp, he = run["dp"], run["he"]
    he_text = he["scheme"] + (
        f", N={he['poly_modulus_degree']}, scale 2^{he.get('global_scale_bits', '?')}"
        if "poly_modulus_degree" in he
        else ""
    )
    votes = run.get("votes", {})
    return [
        ("run", run["run_id"]),
        ("status", run.get("status", "?")),
        ("purpose", run["purpose"]),
        ("model", str(run.get("model_name", "-"))),
        ("cohort schema (SHA-256)", str(run.get("schema_sha256", "-"))),
        (
            "differential privacy",
            f"ε={dp['epsilon']:g}, δ={dp['delta']:g} for the whole run ({dp.get('accountant', 'rdp')})",
        ),
        ("homomorphic encryption", he_text),
        ("rounds", str(run.get("rounds", "-"))),
        ("code version", run["code_version"]),
        ("hospitals", ", ".join(f"{h} ({votes.get(h, 'not voted')})" for h in run["hospitals"])),
        ("proposed at", run["registered_at"]),
    ]


def vote(ledger: Ledger, run_id: str, decision: str) -> dict[str, Any]:
    """Cast this hospital's vote (``approve``/``reject``) on a run with the ledger's own identity."""
    result: dict[str, Any] = ledger.submit("LineageContract:vote_run", run_id, decision).result
    return result


def require_approved(ledger: Ledger, run_id: str, expected: dict[str, Any]) -> dict[str, Any]:
    """The started run this hospital approved, whose terms equal `expected`; else `NotApproved`.

    `expected` holds what the aggregator asked for: purpose, epsilon, delta, rounds, whether updates are
    encrypted (he) and the SHA-256 of the model spec (features, ranges, layers, seed) the hospital is asked to
    train, which must be the proposal's `schema_sha256`: an aggregator that changed the features or the network
    after the vote would otherwise train on terms nobody approved.
    """
    run = read_run(ledger, run_id)
    me = ledger.msp_id
    if run["status"] != "started":
        raise NotApproved(f"run {run_id} has not started: {not_approved_message(run).removeprefix('run_id: ')}")
    if run["votes"].get(me) != "approve":
        raise NotApproved(
            f"{me} has not approved run {run_id} ({run['votes'].get(me, 'no vote')}); not training even though the "
            "majority approved"
        )
    approved = {
        "purpose": run["purpose"],
        "epsilon": run["dp"]["epsilon"],
        "delta": run["dp"]["delta"],
        "he": run["he"]["scheme"] != "none",
    }
    for optional in ("rounds", "schema_sha256"):  # terms a proposal may leave open
        if optional in run:
            approved[optional] = run[optional]
    differing = [
        f"{k} (approved {v!r}, asked {expected.get(k)!r})" for k, v in approved.items() if expected.get(k) != v
    ]
    if differing:
        raise NotApproved(f"the request differs from the approved run {run_id}: {', '.join(differing)}")
    return run
