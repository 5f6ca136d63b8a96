"""`carefed audit …` and `carefed report …`: the compliance officer's commands.

Every command reads the ledger through the `Ledger` interface only (``--state-dir``, ``--org`` and ``--role``
choose the ledger and the identity), except ``audit verify``, which needs nothing but the bundle directory and
the consortium's CA certificates.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

audit_app = typer.Typer(help="Export and verify the audit trail.", no_args_is_help=True)
report_app = typer.Typer(help="Regulators' reports from the ledger.", no_args_is_help=True)
console = Console(soft_wrap=True)  # long hashes and paths stay on one line (and greppable)
errors = Console(stderr=True, soft_wrap=True)

StateDir = Annotated[Path, typer.Option("--state-dir", help="CareFed state directory (ledger and identities).")]
Org = Annotated[str, typer.Option("--org", help="Organisation whose identity reads the ledger (and signs).")]
Role = Annotated[str, typer.Option("--role", help="Which identity of the org: client, admin or node.")]
DEFAULT_STATE = Path(".carefed")


def _fail(message: str) -> typer.Exit:
    errors.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=1)


def _open(state_dir: Path, org: str, role: str) -> Any:
    from fabric_network.ledger import LedgerError, open_ledger

    if role not in ("client", "admin", "node"):
        raise _fail(f"--role {role!r}: use client, admin or node")
    try:
        return open_ledger(state_dir=state_dir, org=org, role=role)
    except LedgerError as exc:
        raise _fail(str(exc)) from None


def _parse_time(option: str, value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _fail(
            f"{option} {value!r}: give an ISO 8601 date or time, e.g. 2026-01-31 or 2026-01-31T08:00:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


@audit_app.command("export")
def export(
    out: Annotated[Path, typer.Option("--out", help="New directory for the bundle.")],
    fmt: Annotated[str, typer.Option("--format", help="csv, jsonl or fhir (FHIR R4 AuditEvent Bundle).")] = "jsonl",
    since: Annotated[str | None, typer.Option("--from", help="Only events at or after this time (ISO 8601).")] = None,
    until: Annotated[str | None, typer.Option("--to", help="Only events before this time (ISO 8601).")] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="Only events of this actor.")] = None,
    state_dir: StateDir = DEFAULT_STATE,
    org: Org = "consortium",
    role: Role = "admin",
) -> None:
    """Export the audit trail as a signed bundle that `carefed audit verify` checks offline."""
    from compliance.bundle import BundleError, ExportFormat, export_bundle
    from compliance.trail import TrailFilter, audit_trail
    from fabric_network.identities import IdentityError, identity_for, load_consortium

    try:
        export_format = ExportFormat(fmt)
    except ValueError:
        raise _fail(f"--format {fmt!r}: use csv, jsonl or fhir") from None
    trail_filter = TrailFilter(_parse_time("--from", since), _parse_time("--to", until), actor)
    try:
        signer = identity_for(load_consortium(state_dir), org, role)  # type: ignore[arg-type]
    except IdentityError as exc:
        raise _fail(str(exc)) from None
    with _open(state_dir, org, role) as ledger, console.status("reading the audit trail from the ledger…"):
        records, height = audit_trail(ledger, trail_filter)
        try:
            manifest = export_bundle(records, export_format, out, signer, height, trail_filter.as_manifest())
        except (BundleError, ValueError) as exc:
            raise _fail(str(exc)) from None
        ledger.submit(
            "AuditContract:append_audit_event",
            {
                "actor": f"{org}-{role}".lower(),
                "role": "compliance_officer",
                "action": "audit.export",
                "object": f"audit_export:{manifest['bundle_id']}",
                "outcome": "success",
                "purpose": "HCOMPL",
            },
        )
    console.print(
        f"exported {manifest['tree_size']} events ({fmt}) at ledger height {height} to {out}\n"
        f"tree head {manifest['tree_head']}, signed by {manifest['signer']['subject']}"
    )


@audit_app.command("verify")
def verify(
    directory: Annotated[Path, typer.Argument(help="Bundle directory written by `carefed audit export`.")],
    previous: Annotated[
        Path | None, typer.Option("--previous", help="An earlier export that must be a prefix of this one.")
    ] = None,
    ca: Annotated[
        list[Path] | None, typer.Option("--ca", help="Consortium CA certificate(s), files or directories.")
    ] = None,
    state_dir: StateDir = DEFAULT_STATE,
) -> None:
    """Verify a bundle offline: signature chain, tree head, each event's inclusion, consistency with --previous."""
    from compliance.bundle import verify_bundle
    from compliance.signing import SigningError, consortium_ca_certificates, load_ca_certificates
    from fabric_network.identities import IdentityError

    try:
        cas = load_ca_certificates(ca) if ca else consortium_ca_certificates(state_dir)
    except (SigningError, IdentityError) as exc:
        raise _fail(f"{exc} (or give --ca with the consortium's CA certificates)") from None
    result = verify_bundle(directory, cas, previous)
    if not result.ok:
        for problem in result.problems:
            errors.print(f"[red]✗[/red] {problem}")
        raise _fail(f"{directory} does NOT verify ({len(result.problems)} problem(s))")
    console.print(
        f"[green]✓[/green] {directory}: {result.tree_size} events, tree head {result.tree_head}, "
        f"ledger height {result.ledger_height}, signed by {result.signer}"
        + (f"; consistent with {previous}" if previous else "")
    )


def _emit(report: dict[str, Any], fmt: str, out: Path | None) -> None:
    from compliance.reports import to_markdown

    if fmt not in ("markdown", "json"):
        raise _fail(f"--format {fmt!r}: use markdown or json")
    text = json.dumps(report, indent=2, ensure_ascii=False) if fmt == "json" else to_markdown(report)
    if out is None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")
        console.print(f"wrote {out}")


ReportFormat = Annotated[str, typer.Option("--format", help="markdown or json.")]
ReportOut = Annotated[Path | None, typer.Option("--out", help="Write to this file instead of the terminal.")]


def _report(
    state_dir: Path, org: str, role: str, fmt: str, out: Path | None, build: Callable[[Any], dict[str, Any]]
) -> None:
    """Build one report from the ledger and emit it; a report's own refusal becomes a one-line error."""
    from compliance.reports import ReportError

    with _open(state_dir, org, role) as ledger:
        try:
            report = build(ledger)
        except ReportError as exc:
            raise _fail(str(exc)) from None
    _emit(report, fmt, out)


@report_app.command("access")
def access(
    pseudonym: Annotated[
        str | None, typer.Argument(help="The patient's pseudonym (64 hex characters); or give --mrn and --hospital.")
    ] = None,
    mrn: Annotated[str | None, typer.Option("--mrn", help="Resolve the pseudonym from this MRN at --hospital.")] = None,
    hospital: Annotated[str | None, typer.Option("--hospital", help="The hospital whose table maps --mrn.")] = None,
    fmt: ReportFormat = "markdown",
    out: ReportOut = None,
    state_dir: StateDir = DEFAULT_STATE,
    org: Org = "consortium",
    role: Role = "admin",
) -> None:
    """GDPR Art. 15: every run, round, model version, purpose and recipient that used a patient's data."""
    from compliance.reports import access_report

    if (pseudonym is None) == (mrn is None) or (mrn is not None and hospital is None):
        raise _fail("give either PSEUDONYM, or --mrn together with --hospital")
    if mrn is not None and hospital is not None:
        from compliance.erasure import ErasureError, resolve_pseudonym

        try:
            pseudonym = resolve_pseudonym(state_dir, hospital, mrn)
        except ErasureError as exc:
            raise _fail(str(exc)) from None
    assert pseudonym is not None
    found = pseudonym
    _report(state_dir, org, role, fmt, out, lambda ledger: access_report(ledger, found))


@report_app.command("disclosures")
def disclosures(
    since: Annotated[str | None, typer.Option("--since", help="Start date (default and limit: six years ago).")] = None,
    fmt: ReportFormat = "markdown",
    out: ReportOut = None,
    state_dir: StateDir = DEFAULT_STATE,
    org: Org = "consortium",
    role: Role = "admin",
) -> None:
    """HIPAA §164.528: the accounting of disclosures (model exports, predictions served)."""
    from compliance.reports import disclosures_report

    start = _parse_time("--since", since)
    _report(state_dir, org, role, fmt, out, lambda ledger: disclosures_report(ledger, start))


@report_app.command("consent-coverage")
def consent_coverage(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="The training run id.")],
    fmt: ReportFormat = "markdown",
    out: ReportOut = None,
    state_dir: StateDir = DEFAULT_STATE,
    org: Org = "consortium",
    role: Role = "admin",
) -> None:
    """Per round and hospital of a run: patients eligible, excluded and withdrawn."""
    from compliance.reports import consent_coverage_report

    _report(state_dir, org, role, fmt, out, lambda ledger: consent_coverage_report(ledger, run_id))


@report_app.command("privacy-budget")
def privacy_budget(
    fmt: ReportFormat = "markdown",
    out: ReportOut = None,
    state_dir: StateDir = DEFAULT_STATE,
    org: Org = "consortium",
    role: Role = "admin",
) -> None:
    """ε spent and remaining per hospital and purpose, per run."""
    from compliance.reports import privacy_budget_report

    _report(state_dir, org, role, fmt, out, privacy_budget_report)


@report_app.command("lineage")
def lineage(
    model_id: Annotated[str, typer.Argument(metavar="MODEL", help="The registered model version id.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the PROV-N, PROV-JSON and FHIR files.")] = Path(
        "lineage"
    ),
    state_dir: StateDir = DEFAULT_STATE,
    org: Org = "consortium",
    role: Role = "admin",
) -> None:
    """A model version's lineage as W3C PROV (PROV-N, PROV-JSON) and a FHIR Provenance."""
    from compliance.lineage import lineage_fhir_provenance, lineage_prov, prov_round_trip_equal
    from fabric_network.ledger import ContractRejected

    with _open(state_dir, org, role) as ledger:
        try:
            record = ledger.evaluate("LineageContract:get_model_lineage", model_id)
        except ContractRejected as exc:
            raise _fail(f"MODEL: {exc}") from None
    document = lineage_prov(record)
    if not prov_round_trip_equal(document):
        raise _fail("the PROV document does not survive a PROV-JSON round trip; please report this")
    out.mkdir(parents=True, exist_ok=True)
    stem = model_id.replace("/", "_").replace(":", "_")
    (out / f"{stem}.provn").write_text(document.get_provn() + "\n", encoding="utf-8")
    (out / f"{stem}.prov.json").write_text(f"{document.serialize(format='json', indent=1)}\n", encoding="utf-8")
    provenance = lineage_fhir_provenance(record)
    (out / f"{stem}.provenance.fhir.json").write_text(json.dumps(provenance, indent=1) + "\n", encoding="utf-8")
    console.print(
        f"lineage of {model_id}: {len(record['rounds'])} round(s) of run {record['run']['run_id']} → "
        f"{out}/{stem}.provn, .prov.json, .provenance.fhir.json"
    )
