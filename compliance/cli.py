"""`carefed audit …` and `carefed report …`: the compliance officer's commands.

Every command reads the ledger through the `Ledger` interface only (``--state-dir`` and ``--backend`` choose the
ledger, as for `carefed ledger …`; ``--org`` and ``--role`` the identity), except ``audit verify``, which needs
nothing but the bundle directory and the fingerprint of the consortium CA (the bundle carries the certificate;
the fingerprint pins it).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress

from carefed.options import (
    DEFAULT_STATE_DIR,
    AsJson,
    Backend,
    LedgerBackend,
    LedgerRole,
    Org,
    ReportFormat,
    Role,
    StateDir,
)
from compliance.formats import ExportFormat

audit_app = typer.Typer(help="Export and verify the audit trail.", no_args_is_help=True)
report_app = typer.Typer(help="Regulators' reports from the ledger.", no_args_is_help=True)
console = Console(soft_wrap=True)  # long hashes and paths stay on one line (and greppable)
errors = Console(stderr=True, soft_wrap=True)

DEFAULT_STATE = DEFAULT_STATE_DIR


def _fail(message: str) -> typer.Exit:
    errors.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=1)


def _open(state_dir: Path, backend: LedgerBackend, org: str, role: LedgerRole) -> Any:
    from fabric_network.ledger import LedgerError, open_ledger

    if not (state_dir / "crypto").is_dir():
        raise _fail(f"--state-dir: no consortium in {state_dir} (run `carefed demo` or `carefed ledger init`)")
    try:
        return open_ledger(state_dir=state_dir, backend=backend.value, org=org, role=role.value)
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
    fmt: Annotated[
        ExportFormat, typer.Option("--format", help="Events as CSV, JSON lines or a FHIR R4 AuditEvent Bundle.")
    ] = ExportFormat.JSONL,
    since: Annotated[str | None, typer.Option("--from", help="Only events at or after this time (ISO 8601).")] = None,
    until: Annotated[str | None, typer.Option("--to", help="Only events before this time (ISO 8601).")] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="Only events of this actor.")] = None,
    state_dir: StateDir = DEFAULT_STATE,
    backend: Backend = LedgerBackend.embedded,
    org: Org = "consortium",
    role: Role = LedgerRole.admin,
    as_json: AsJson = False,
) -> None:
    """Export the audit trail as a signed bundle that `carefed audit verify` checks offline."""
    from cryptography import x509

    from compliance.bundle import BundleError, export_bundle
    from compliance.signing import ca_fingerprint, org_ca_pem
    from compliance.trail import TrailFilter, audit_trail
    from fabric_network.identities import IdentityError, identity_for, load_consortium

    trail_filter = TrailFilter(_parse_time("--from", since), _parse_time("--to", until), actor)
    with _open(state_dir, backend, org, role) as ledger:
        try:
            signer = identity_for(load_consortium(state_dir), org, role.value)
            ca_pem = org_ca_pem(state_dir, org)
        except IdentityError as exc:
            raise _fail(str(exc)) from None
        with console.status("reading the audit trail from the ledger…"):
            records, height = audit_trail(ledger, trail_filter)
        try:
            manifest = export_bundle(records, fmt, out, signer, height, trail_filter.as_manifest(), ca_pem)
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
    fingerprint = ca_fingerprint(x509.load_pem_x509_certificate(ca_pem))
    if as_json:
        facts = {k: manifest[k] for k in ("bundle_id", "format", "tree_size", "tree_head", "ledger_height")}
        signer_facts = {"signer": manifest["signer"]["subject"], "ca_fingerprint": fingerprint}
        typer.echo(json.dumps({**facts, "out": str(out), **signer_facts}, indent=2))
        return
    console.print(
        f"exported {manifest['tree_size']} events ({fmt.value}) at ledger height {height} to {out}\n"
        f"tree head {manifest['tree_head']}, signed by {manifest['signer']['subject']}\n"
        f"consortium CA fingerprint (SHA-256) {fingerprint}\n"
        f"verify anywhere with: carefed audit verify {out} --ca-fingerprint {fingerprint}"
    )


@audit_app.command("verify")
def verify(
    directory: Annotated[Path, typer.Argument(help="Bundle directory written by `carefed audit export`.")],
    previous: Annotated[
        Path | None, typer.Option("--previous", help="An earlier export that must be a prefix of this one.")
    ] = None,
    ca_fingerprint: Annotated[
        str | None,
        typer.Option(
            "--ca-fingerprint",
            help="SHA-256 fingerprint of the consortium CA (printed by export): trust the CA the bundle carries "
            "only if it is this one. Needs no state dir.",
        ),
    ] = None,
    ca: Annotated[
        list[Path] | None, typer.Option("--ca", help="Consortium CA certificate(s), files or directories.")
    ] = None,
    state_dir: StateDir = DEFAULT_STATE,
    as_json: AsJson = False,
) -> None:
    """Verify a bundle offline: signature chain, tree head, each event's inclusion, consistency with --previous.

    The trusted CA comes from --ca-fingerprint (pinning the certificate the bundle carries), --ca, or else the
    consortium in --state-dir.
    """
    from compliance.bundle import BundleError, carried_ca_pem, verify_bundle
    from compliance.signing import SigningError, consortium_ca_certificates, load_ca_certificates, pinned_ca
    from fabric_network.identities import IdentityError

    if not directory.is_dir():
        raise _fail(f"DIRECTORY: {directory} is not a directory; give the one `carefed audit export --out` wrote")
    try:
        if ca_fingerprint is not None:
            cas = [pinned_ca(carried_ca_pem(directory), ca_fingerprint)]
        elif ca:
            cas = load_ca_certificates(ca)
        elif (state_dir / "crypto").is_dir():
            cas = consortium_ca_certificates(state_dir)
        else:
            raise SigningError(
                f"no consortium in {state_dir} to take the CA from: give --ca-fingerprint F (printed by "
                "`carefed audit export`) or --ca with the consortium's CA certificate"
            )
    except (SigningError, IdentityError, BundleError) as exc:
        raise _fail(str(exc)) from None
    with Progress(console=errors, transient=True, disable=as_json) as progress:
        task = progress.add_task("checking inclusion proofs", total=None)
        result = verify_bundle(
            directory, cas, previous, lambda done, total: progress.update(task, completed=done, total=total)
        )
    if as_json:
        facts = {"ok": result.ok, "directory": str(directory), "problems": result.problems}
        facts |= {"tree_size": result.tree_size, "tree_head": result.tree_head, "signer": result.signer}
        typer.echo(json.dumps({**facts, "previous": str(previous) if previous else None}, indent=2))
        if not result.ok:
            raise typer.Exit(code=1)
        return
    if not result.ok:
        for problem in result.problems:
            errors.print(f"[red]✗[/red] {problem}")
        raise _fail(f"{directory} does NOT verify ({len(result.problems)} problem(s))")
    console.print(
        f"[green]✓[/green] {directory}: {result.tree_size} events, tree head {result.tree_head}, "
        f"ledger height {result.ledger_height}, signed by {result.signer}"
        + (f"; consistent with {previous}" if previous else "")
    )


def _emit(report: dict[str, Any], fmt: ReportFormat, out: Path | None) -> None:
    from compliance.reports import to_markdown

    text = json.dumps(report, indent=2, ensure_ascii=False) if fmt is ReportFormat.json else to_markdown(report)
    if out is None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")
        console.print(f"wrote {out}")


Format = Annotated[ReportFormat, typer.Option("--format", help="Markdown for people, JSON for scripts.")]
ReportOut = Annotated[Path | None, typer.Option("--out", help="Write to this file instead of the terminal.")]


def _report(
    state_dir: Path,
    backend: LedgerBackend,
    org: str,
    role: LedgerRole,
    fmt: ReportFormat,
    out: Path | None,
    build: Callable[[Any], dict[str, Any]],
) -> None:
    """Build one report from the ledger and emit it; a report's own refusal becomes a one-line error."""
    from compliance.reports import ReportError

    with _open(state_dir, backend, org, role) as ledger:
        try:
            report = build(ledger)
        except ReportError as exc:
            raise _fail(str(exc)) from None
    _emit(report, fmt, out)


@report_app.command("access")
def access(
    pseudonym: Annotated[
        str,
        typer.Argument(
            help="The patient's pseudonym (64 hex characters), or - to read it from stdin: at the hospital, "
            "`carefed node pseudonym --hospital H < mrn.txt | carefed report access -`."
        ),
    ],
    fmt: Format = ReportFormat.markdown,
    out: ReportOut = None,
    state_dir: StateDir = DEFAULT_STATE,
    backend: Backend = LedgerBackend.embedded,
    org: Org = "consortium",
    role: Role = LedgerRole.admin,
) -> None:
    """GDPR Art. 15: every run, round, model version, purpose and recipient that used a patient's data.

    The compliance side knows patients only by pseudonym; the MRN → pseudonym lookup happens at the patient's
    hospital (`carefed node pseudonym`), on the hospital's machine, where the table is.
    """
    import sys

    from compliance.reports import access_report

    found = sys.stdin.readline().strip() if pseudonym == "-" else pseudonym
    if not found:
        raise _fail("no pseudonym on stdin: pipe `carefed node pseudonym --hospital H < mrn.txt` into it")
    _report(state_dir, backend, org, role, fmt, out, lambda ledger: access_report(ledger, found))


@report_app.command("disclosures")
def disclosures(
    since: Annotated[str | None, typer.Option("--since", help="Start date (default and limit: six years ago).")] = None,
    fmt: Format = ReportFormat.markdown,
    out: ReportOut = None,
    state_dir: StateDir = DEFAULT_STATE,
    backend: Backend = LedgerBackend.embedded,
    org: Org = "consortium",
    role: Role = LedgerRole.admin,
) -> None:
    """HIPAA §164.528: the accounting of disclosures (model exports, predictions served)."""
    from compliance.reports import disclosures_report

    start = _parse_time("--since", since)
    _report(state_dir, backend, org, role, fmt, out, lambda ledger: disclosures_report(ledger, start))


@report_app.command("consent-coverage")
def consent_coverage(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="The training run id.")],
    fmt: Format = ReportFormat.markdown,
    out: ReportOut = None,
    state_dir: StateDir = DEFAULT_STATE,
    backend: Backend = LedgerBackend.embedded,
    org: Org = "consortium",
    role: Role = LedgerRole.admin,
) -> None:
    """Per round and hospital of a run: patients eligible, excluded and withdrawn."""
    from compliance.reports import consent_coverage_report

    _report(state_dir, backend, org, role, fmt, out, lambda ledger: consent_coverage_report(ledger, run_id))


@report_app.command("privacy-budget")
def privacy_budget(
    recompute: Annotated[
        bool, typer.Option("--recompute", help="Recompute every charge's ε from its mechanism on the ledger.")
    ] = False,
    fmt: Format = ReportFormat.markdown,
    out: ReportOut = None,
    state_dir: StateDir = DEFAULT_STATE,
    backend: Backend = LedgerBackend.embedded,
    org: Org = "consortium",
    role: Role = LedgerRole.admin,
) -> None:
    """ε spent and remaining per hospital and purpose, per run; --recompute checks every charge."""
    from compliance.reports import privacy_budget_report

    _report(state_dir, backend, org, role, fmt, out, lambda ledger: privacy_budget_report(ledger, recompute))


@report_app.command("credit")
def credit(
    model_id: Annotated[str, typer.Argument(metavar="MODEL", help="The registered model id.")],
    fmt: Format = ReportFormat.markdown,
    out: ReportOut = None,
    chart: Annotated[Path | None, typer.Option("--chart", help="Also write a bar chart (PNG) here.")] = None,
    state_dir: StateDir = DEFAULT_STATE,
    backend: Backend = LedgerBackend.embedded,
    org: Org = "consortium",
    role: Role = LedgerRole.admin,
) -> None:
    """Contributor credit of a model: per hospital, examples, rounds, ε spent and contribution scores."""
    from compliance.credit import plot_credit
    from compliance.reports import credit_of_model

    built: list[dict[str, Any]] = []

    def build(ledger: Any) -> dict[str, Any]:
        built.append(credit_of_model(ledger, model_id))
        return built[0]

    _report(state_dir, backend, org, role, fmt, out, build)
    if chart is not None:
        console.print(f"wrote {plot_credit(built[0], chart)}")


@report_app.command("lineage")
def lineage(
    model_id: Annotated[str, typer.Argument(metavar="MODEL", help="The registered model version id.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the PROV-N, PROV-JSON and FHIR files.")] = Path(
        "lineage"
    ),
    state_dir: StateDir = DEFAULT_STATE,
    backend: Backend = LedgerBackend.embedded,
    org: Org = "consortium",
    role: Role = LedgerRole.admin,
) -> None:
    """A model version's lineage as W3C PROV (PROV-N, PROV-JSON) and a FHIR Provenance."""
    from compliance.lineage import lineage_fhir_provenance, lineage_prov, prov_round_trip_equal
    from fabric_network.ledger import ContractRejected

    with _open(state_dir, backend, org, role) as ledger:
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
