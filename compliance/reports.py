"""The regulators' reports, computed from the ledger alone and rendered as JSON and Markdown.

- access (GDPR Art. 15): for one pseudonym, its consent history, and every run, round, model version, purpose
  and recipient that may have used the patient's data;
- disclosures (HIPAA §164.528): date, recipient, description and purpose of each disclosure, six years back;
- consent coverage of a run: per round and hospital, patients eligible, excluded and withdrawn;
- privacy budget: ε spent and remaining per hospital and purpose, and per run; optionally every charge's ε
  recomputed from its mechanism on the ledger;
- contributor credit of a model (compliance/credit.py).

"May have used": the ledger holds a hospital's consent snapshot as a count and an RFC 9162 root, not the
pseudonyms. A round is listed when the patient's consent for the run's purpose was active at the time the
hospital took its snapshot; the hospital can prove actual membership with an inclusion proof against the root.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from typing import Any

from compliance.credit import credit_report
from compliance.records import EventKind
from compliance.trail import kind_of_action, ledger_events, query_all_audit_events
from fabric_network.contracts.budget import recompute
from fabric_network.ledger import ContractRejected, Ledger
from privacy.accountant import ACCOUNTANT, ACCOUNTANT_VERSION, understates

Report = dict[str, Any]
LOOK_BACK_YEARS = 6


class ReportError(ValueError):
    """A report that cannot be made from the ledger; the message names the argument and the fix."""


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _runs(ledger: Ledger) -> list[dict[str, Any]]:
    """Every registered run, in registration order (the ledger has no run index: the events are one)."""
    height = ledger.height()
    run_ids = [e.payload["run_id"] for e in ledger_events(ledger, height) if e.name == "RunRegistered"]
    return [ledger.evaluate("LineageContract:read_run", run_id) for run_id in run_ids]


def _active_at(versions: list[dict[str, Any]], purpose: str, hospital: str, at: dt.datetime) -> bool:
    """Whether, by the consent history, the patient's consent for `purpose` was active at `at`."""
    state = None
    for version in versions:
        if version.get("purpose") != purpose or version.get("hospital") != hospital:
            continue
        if _time(version["updated_at"]) <= at:
            state = version
    if state is None or state["status"] != "active":
        return False
    starts, ends = state.get("valid_from") or "", state.get("valid_until") or ""
    return (not starts or _time(starts) <= at) and (not ends or at < _time(ends))


def access_report(ledger: Ledger, pseudonym: str) -> Report:
    """GDPR Art. 15: what the consortium did with one patient's data, by pseudonym."""
    if not re.fullmatch(r"[0-9a-f]{64}", pseudonym):
        raise ReportError(
            "PSEUDONYM: give the patient's pseudonym (64 lowercase hex characters), never an MRN; "
            "only the patient's hospital can look it up in its pseudonym table"
        )
    try:
        versions = ledger.evaluate("ConsentContract:consent_history", pseudonym)
    except ContractRejected as exc:
        raise ReportError(f"PSEUDONYM: {exc}") from None
    try:
        erasure: dict[str, Any] | None = ledger.evaluate("ConsentContract:read_erasure", pseudonym)
    except ContractRejected:
        erasure = None
    history = [v["value"] for v in versions if v.get("value")]
    hospitals = sorted({v["hospital"] for v in history})
    uses, models = [], []
    for run in _runs(ledger):
        rounds = ledger.evaluate("LineageContract:list_rounds", run["run_id"])
        used_rounds = []
        for round_record in rounds:
            for participant in round_record["participants"]:
                if participant["hospital"] not in hospitals:
                    continue
                snapshot = ledger.evaluate("ConsentContract:read_consent_snapshot", participant["consent_snapshot_id"])
                if _active_at(history, run["purpose"], participant["hospital"], _time(snapshot["taken_at"])):
                    used_rounds.append(round_record["round"])
                    uses.append(
                        {
                            "run_id": run["run_id"],
                            "round": round_record["round"],
                            "hospital": participant["hospital"],
                            "purpose": run["purpose"],
                            "consent_snapshot_id": participant["consent_snapshot_id"],
                            "consent_snapshot_root": participant["consent_snapshot_root"],
                            "snapshot_taken_at": snapshot["taken_at"],
                        }
                    )
        if used_rounds:
            first = min(used_rounds)
            for model in ledger.evaluate("LineageContract:list_models"):
                if model["run_id"] == run["run_id"] and model["round"] >= first:
                    models.append({"model_id": model["model_id"], "run_id": run["run_id"], "round": model["round"]})
    model_ids = {m["model_id"] for m in models}
    recipients = []
    for row in query_all_audit_events(ledger):
        object_type, _, object_id = row["object"].partition(":")
        about_patient = object_type in ("patient", "consent") and object_id == pseudonym
        about_model = object_type == "model" and object_id in model_ids
        if (about_patient or about_model) and kind_of_action(row["action"]) == EventKind.DISCLOSURE:
            recipients.append(
                {
                    "time": row["time"],
                    "recipient": row["actor"],
                    "organisation": row["organisation"],
                    "action": row["action"],
                    "object": row["object"],
                    "purpose": row["purpose"],
                }
            )
    return {
        "report": "access",
        "legal_basis": "GDPR Art. 15 (right of access by the data subject)",
        "pseudonym": pseudonym,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "ledger_height": ledger.height(),
        "erasure": erasure,
        "consent_history": history,
        "data_uses": uses,
        "model_versions": models,
        "recipients": recipients,
        "note": "A round is listed when this patient's consent was active when the hospital took its consent "
        "snapshot; the hospital proves membership with an RFC 9162 inclusion proof against the snapshot root.",
    }


def disclosures_report(ledger: Ledger, since: dt.datetime | None = None) -> Report:
    """HIPAA §164.528: every disclosure recorded on the ledger since `since` (at most six years back)."""
    now = dt.datetime.now(dt.UTC)
    limit = now.replace(year=now.year - LOOK_BACK_YEARS)
    start = max(since, limit) if since else limit
    rows = [
        r
        for r in query_all_audit_events(ledger)
        if kind_of_action(r["action"]) == EventKind.DISCLOSURE and _time(r["time"]) >= start
    ]
    return {
        "report": "disclosures",
        "legal_basis": "HIPAA 45 CFR §164.528 (accounting of disclosures, six-year look-back)",
        "since": start.isoformat(timespec="seconds"),
        "generated_at": now.isoformat(timespec="seconds"),
        "ledger_height": ledger.height(),
        "disclosures": [
            {
                "date": r["time"],
                "recipient": r["actor"],
                "recipient_organisation": r["organisation"],
                "description": f"{r['action']} of {r['object']} ({r['outcome']})",
                "purpose": r["purpose"],
                "ledger_tx": r["tx_id"],
            }
            for r in rows
        ],
    }


def consent_coverage_report(ledger: Ledger, run_id: str) -> Report:
    """Per round and hospital of a run: patients eligible (in the snapshot), excluded, withdrawn."""
    try:
        run = ledger.evaluate("LineageContract:read_run", run_id)
    except ContractRejected as exc:
        raise ReportError(f"RUN: {exc}") from None
    purpose, started = run["purpose"], run["registered_at"]
    at_start: dict[str, set[str]] = {
        h: set(ledger.evaluate("ConsentContract:list_active_consents", purpose, h, started)) for h in run["hospitals"]
    }
    rows = []
    for round_record in ledger.evaluate("LineageContract:list_rounds", run_id):
        for participant in round_record["participants"]:
            hospital = participant["hospital"]
            snapshot = ledger.evaluate("ConsentContract:read_consent_snapshot", participant["consent_snapshot_id"])
            active = set(
                ledger.evaluate("ConsentContract:list_active_consents", purpose, hospital, snapshot["taken_at"])
            )
            rows.append(
                {
                    "round": round_record["round"],
                    "hospital": hospital,
                    "eligible": snapshot["count"],
                    "excluded": max(len(active) - snapshot["count"], 0),
                    "withdrawn": len(at_start.get(hospital, set()) - active),
                    "consent_snapshot_root": snapshot["root"],
                }
            )
        for hospital in round_record.get("dropped", []):
            rows.append({"round": round_record["round"], "hospital": hospital, "dropped_out": True})
    return {
        "report": "consent-coverage",
        "run_id": run_id,
        "purpose": purpose,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "ledger_height": ledger.height(),
        "rounds": rows,
        "definitions": {
            "eligible": "patients in the hospital's consent snapshot for the round (trained on)",
            "excluded": "patients with active consent at snapshot time whom the hospital did not use",
            "withdrawn": "patients with active consent when the run was registered but not at snapshot time",
        },
    }


def privacy_budget_report(ledger: Ledger, recompute: bool = False) -> Report:
    """ε spent and remaining per hospital and purpose, with the charges per run.

    With `recompute`, every charge's ε is computed again from the mechanisms on the ledger alone, with the
    accountant the contract uses (`fabric_network.contracts.budget.recompute`), and compared to what was charged.
    """
    budgets = ledger.evaluate("PrivacyBudgetContract:list_budgets")
    per_run: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for event in ledger_events(ledger, ledger.height()):
        if event.name == "BudgetCharged":
            key = (event.payload["hospital"], event.payload["purpose"])
            per_run[key][str(event.payload.get("run_id", ""))] += float(event.payload["epsilon"])
    report: Report = {
        "report": "privacy-budget",
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "ledger_height": ledger.height(),
        "budgets": [
            {**b, "per_run": dict(per_run.get((b["hospital"], b["purpose"]), {}))}
            for b in sorted(budgets, key=lambda b: (b["hospital"], b["purpose"]))
        ],
    }
    report["queries"] = _query_charges(ledger)
    if recompute:
        report["recomputed"] = recompute_charges(ledger.evaluate("PrivacyBudgetContract:list_budget_charges", "", ""))
        differences = [abs(row["difference"]) for row in report["recomputed"]]
        report["recompute_summary"] = {
            "charges": len(differences),
            "max_abs_difference": max(differences, default=0.0),
            "agree_to_1e-6": all(d <= RECOMPUTE_AGREEMENT for d in differences),
            "understated": sum(row["understated"] for row in report["recomputed"]),
            "accountant": f"{ACCOUNTANT} {ACCOUNTANT_VERSION} (privacy/accountant.py)",
        }
    return report


RECOMPUTE_AGREEMENT = 1e-6


def _query_charges(ledger: Ledger) -> list[dict[str, Any]]:
    """Every federated query with its requester, outcome and the ε each hospital was charged for it."""
    charged: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for charge in ledger.evaluate("PrivacyBudgetContract:list_budget_charges", "", ""):
        charged[charge["run_id"]][charge["hospital"]] += float(charge["epsilon"])
    return [
        {
            "query_id": q["query_id"],
            "registered_at": q["registered_at"],
            "requester": q["requester"],
            "purpose": q["purpose"],
            "kind": q["kind"],
            "epsilon": q["epsilon"],
            "status": q["status"],
            "charged": dict(charged.get(q["query_id"], {})),
            "result_sha256": q.get("result_sha256", ""),
        }
        for q in sorted(ledger.evaluate("AnalyticsContract:list_queries"), key=lambda q: q["registered_at"])
    ]


def recompute_charges(charges: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each charge's ε recomputed from its mechanism and its run's earlier charges, beside the charged ε."""
    by_run: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for charge in charges:
        by_run[(charge["hospital"], charge["purpose"], charge["run_id"])].append(charge)
    rows = []
    for (hospital, purpose, run_id), run_charges in sorted(by_run.items()):
        ordered = sorted(run_charges, key=lambda ch: ch["round"])
        for i, charge in enumerate(ordered):
            epsilon, run_epsilon = recompute(ordered[:i], charge["mechanism"])
            rows.append(
                {
                    "hospital": hospital,
                    "purpose": purpose,
                    "run_id": run_id,
                    "round": charge["round"],
                    "charged": charge["epsilon"],
                    "recomputed": epsilon,
                    "difference": charge["epsilon"] - epsilon,
                    "understated": understates(charge["epsilon"], epsilon),
                    "run_epsilon": run_epsilon,
                    "noise_multiplier": charge["mechanism"]["noise_multiplier"],
                    "sample_rate": charge["mechanism"]["sample_rate"],
                    "steps": charge["mechanism"]["steps"],
                    "delta": charge["mechanism"]["delta"],
                }
            )
    return rows


def credit_of_model(ledger: Ledger, model_id: str) -> Report:
    """Contributor credit of a registered model (compliance.credit), from its lineage on the ledger."""
    try:
        lineage = ledger.evaluate("LineageContract:get_model_lineage", model_id)
    except ContractRejected as exc:
        raise ReportError(f"MODEL: {exc}") from None
    return credit_report(lineage, ledger.height())


def _cell(value: Any) -> str:
    """A value as a person reads it: ε to three decimals, a per-run breakdown as `run: ε` pairs, never a repr."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else ("yes" if value else "no")
    if isinstance(value, float):
        return f"{value:,.3f}"
    if isinstance(value, dict):
        return "; ".join(f"{key}: {_cell(item)}" for key, item in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(_cell(item) for item in value) or "-"
    return str(value)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    if not rows:
        return ["_none_", ""]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return [*lines, ""]


def to_markdown(report: Report) -> str:
    """A Markdown rendering of any report, for a human reader (the JSON is the record)."""
    kind = report["report"]
    lines = [f"# CareFed {kind} report", ""]
    lines += [
        f"- {key}: {report[key]}" for key in ("legal_basis", "pseudonym", "run_id", "purpose", "since") if key in report
    ]
    lines += [f"- generated at {report['generated_at']} from the ledger at height {report['ledger_height']}", ""]
    if kind == "access":
        if report["erasure"]:
            lines += [f"**Erased** at {report['erasure']['erased_at']} by {report['erasure']['hospital']}.", ""]
        lines += ["## Consent history", ""]
        lines += _table(
            report["consent_history"], ["hospital", "purpose", "status", "valid_from", "valid_until", "updated_at"]
        )
        lines += ["## Runs and rounds that may have used the data", ""]
        lines += _table(report["data_uses"], ["run_id", "round", "hospital", "purpose", "snapshot_taken_at"])
        lines += ["## Model versions", "", *_table(report["model_versions"], ["model_id", "run_id", "round"])]
        lines += [
            "## Recipients",
            "",
            *_table(report["recipients"], ["time", "recipient", "action", "object", "purpose"]),
        ]
        lines += [report["note"], ""]
    elif kind == "disclosures":
        lines += _table(report["disclosures"], ["date", "recipient", "description", "purpose"])
    elif kind == "consent-coverage":
        lines += _table(report["rounds"], ["round", "hospital", "eligible", "excluded", "withdrawn"])
        lines += [f"- {k}: {v}" for k, v in report["definitions"].items()] + [""]
    elif kind == "privacy-budget":
        lines += _table(report["budgets"], ["hospital", "purpose", "limit", "spent", "remaining", "per_run"])
        lines += ["## Federated queries", ""]
        lines += _table(report["queries"], ["registered_at", "requester", "purpose", "kind", "status", "charged"])
        if "recomputed" in report:
            summary = report["recompute_summary"]
            lines += [
                "## Every charge recomputed from the ledger",
                "",
                f"{summary['charges']} charges recomputed with {summary['accountant']}: largest difference "
                f"{summary['max_abs_difference']:.3g}, "
                + ("all agree to 1e-6" if summary["agree_to_1e-6"] else "**some differ by more than 1e-6**")
                + f", {summary['understated']} understated.",
                "",
            ]
            lines += _table(
                report["recomputed"],
                ["hospital", "run_id", "round", "charged", "recomputed", "difference", "noise_multiplier", "steps"],
            )
    elif kind == "credit":
        lines += [f"- model {report['model_id']}, run {report['run_id']}, {report['rounds']} rounds", ""]
        lines += _table(
            [
                {
                    **row,
                    "epsilon": f"{row['epsilon']:.4f}",
                    "data_share": f"{row['data_share']:.3f}",
                    "gain_share": f"{row['gain_share']:+.4f}",
                    "own_improvement": "-" if row["own_improvement"] is None else f"{row['own_improvement']:+.4f}",
                }
                for row in report["contributors"]
            ],
            ["hospital", "rounds", "examples", "epsilon", "data_share", "gain_share", "own_improvement"],
        )
        lines += ["What each score reveals:", ""] + [f"- {k}: {v}" for k, v in report["what_it_reveals"].items()]
    return "\n".join(lines)
