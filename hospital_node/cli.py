"""`carefed node …`: what hospital IT runs to set up, check and start a hospital node."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

node_app = typer.Typer(help="Set up, check and run a hospital node.", no_args_is_help=True)

StateDir = Annotated[Path, typer.Option("--state-dir", help="CareFed state directory.")]
Hospital = Annotated[str, typer.Option("--hospital", help="The hospital's org name, e.g. hospital-a.")]


def _node_dir(state_dir: Path, hospital: str) -> Path:
    from hospital_node.config import node_dir_for

    return node_dir_for(state_dir, hospital).resolve()


def _write_supernode_auth_key(keys_dir: Path) -> Path:
    """An EC P-256 key pair in OpenSSH format: what `flwr supernode register` and `--auth-supernode-private-key` use."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = keys_dir / "supernode-auth"
    if private.exists():
        return private
    key = ec.generate_private_key(ec.SECP256R1())
    private.touch(mode=0o600)
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    )
    private.with_suffix(".pub").write_bytes(
        key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    return private


@node_app.command("init")
def init(
    hospital: Hospital,
    data: Annotated[Path, typer.Option("--data", help="Training data: CSV or FHIR R4 Bundle (.json).")],
    schema: Annotated[Path, typer.Option("--schema", help="Schema TOML (mrn_column, label_column, [[features]]).")],
    eval_data: Annotated[Path | None, typer.Option("--eval-data", help="Held-out data to evaluate models.")] = None,
    drop_bad_rows: Annotated[bool, typer.Option(help="Train without invalid rows instead of refusing.")] = False,
    superlink: Annotated[str, typer.Option(help="SuperLink address host:port.")] = "127.0.0.1:8000",
    root_certificates: Annotated[Path | None, typer.Option(help="Consortium CA certificate (TLS).")] = None,
    insecure: Annotated[bool, typer.Option(help="Connect without TLS (local experiments only).")] = False,
    state_dir: StateDir = Path(".carefed"),
) -> None:
    """Create the node's configuration file, key directory, SuperNode key pair and pseudonym table."""
    from fabric_network.identities import IdentityError, hospital_names
    from hospital_node.config import NodeConfig
    from hospital_node.pseudonyms import PseudonymTable

    try:
        hospital_names([hospital])
    except IdentityError as exc:
        raise typer.BadParameter(str(exc), param_hint="--hospital") from exc
    for option, path in (("--data", data), ("--schema", schema), ("--eval-data", eval_data)):
        if path is not None and not path.exists():
            raise typer.BadParameter(f"{path} does not exist", param_hint=option)
    if not insecure and root_certificates is None:
        typer.echo("note: no --root-certificates; the node will need the consortium CA before it can connect (TLS)")
    node = NodeConfig(
        hospital=hospital,
        node_dir=_node_dir(state_dir, hospital),
        data=data.resolve(),
        schema_path=schema.resolve(),
        eval_data=eval_data.resolve() if eval_data else None,
        drop_bad_rows=drop_bad_rows,
        superlink=superlink,
        root_certificates=root_certificates.resolve() if root_certificates else None,
        insecure=insecure,
        ledger_state_dir=state_dir.resolve(),
    )
    config_path = node.save()
    node.keys_dir.mkdir(parents=True, exist_ok=True)
    node.keys_dir.chmod(0o700)
    auth_key = _write_supernode_auth_key(node.keys_dir)
    PseudonymTable(node.pseudonym_table).close()
    typer.echo(f"wrote {config_path}")
    typer.echo(f"SuperNode key pair {auth_key} (+ .pub: register it with `flwr supernode register`)")
    typer.echo(f"next: `carefed keys ceremony --hospitals …`, then `carefed node check --hospital {hospital}`")


@dataclass
class _Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _validate_only(data: Path, schema_path: Path, drop_bad_rows: bool) -> None:
    """`node check --data --schema`: one line per problem, non-zero exit when any row is bad."""
    from hospital_node.data import DataSchema, SchemaError, load_records

    try:
        report = load_records(data, DataSchema.from_toml(schema_path))
    except (SchemaError, FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    for problem in report.problems:
        typer.echo(f"{data}: {problem}")
    good = report.total_records - report.bad_records
    if report.problems:
        action = f"would drop {report.bad_records}" if drop_bad_rows and not report.file_problems else "trains nothing"
        typer.echo(
            f"{len(report.problems)} problem(s) in {report.bad_records} of {report.total_records} records; {action}",
            err=True,
        )
        raise typer.Exit(code=1)
    typer.echo(f"OK: {good} valid records")


def _preflight(hospital: str, state_dir: Path) -> list[_Check]:
    import ssl

    import httpx

    from fabric_network.ledger import LedgerError, open_ledger
    from hospital_node.config import NodeConfig, NodeConfigError
    from hospital_node.data import DataSchema, SchemaError, load_records

    checks: list[_Check] = []
    try:
        node = NodeConfig.load(_node_dir(state_dir, hospital))
    except NodeConfigError as exc:
        return [_Check("config", False, str(exc), f"carefed node init --hospital {hospital} …")]
    checks.append(_Check("config", True, str(node.node_dir / "node.toml")))
    try:
        schema = DataSchema.from_toml(node.schema_path)
        checks.append(_Check("schema", True, f"{len(schema.features)} features"))
        for label, path in (("data", node.data), ("eval data", node.eval_data)):
            if path is None:
                continue
            report = load_records(path, schema)
            fix = f"carefed node check --data {path} --schema {node.schema_path}"
            detail = f"{report.total_records - report.bad_records} valid of {report.total_records}"
            if report.problems:
                detail += f"; {len(report.problems)} problem(s)" + (" (dropped)" if node.drop_bad_rows else "")
            checks.append(_Check(label, not report.file_problems and (node.drop_bad_rows or report.ok), detail, fix))
    except (SchemaError, FileNotFoundError, ValueError) as exc:
        checks.append(_Check("schema/data", False, str(exc), "fix the file named, then re-run the check"))
    secret = node.he_secret_context
    checks.append(
        _Check(
            "CKKS secret key", secret.exists(), str(secret), f"carefed keys ceremony --hospitals … (incl. {hospital})"
        )
    )
    checks.append(
        _Check("SuperNode key", node.supernode_auth_key.exists(), str(node.supernode_auth_key), "carefed node init …")
    )
    try:
        with open_ledger(backend=node.ledger_backend, state_dir=node.ledger_state_dir, org=hospital) as ledger:
            budget = ledger.evaluate("PrivacyBudgetContract:read_budget", ledger.msp_id, node.purpose)
            active = ledger.evaluate("ConsentContract:list_active_consents", node.purpose, ledger.msp_id, "")
        checks.append(_Check("ledger", True, f"{ledger.msp_id}: {len(active)} active consents for {node.purpose}"))
        checks.append(
            _Check(
                "privacy budget",
                budget["remaining"] > 0,
                f"ε spent {budget['spent']:.3f} of {budget['limit']:.3f}",
                "the consortium raises the limit (PrivacyBudgetContract:set_budget_limit)",
            )
        )
    except (LedgerError, OSError, ValueError) as exc:
        checks.append(_Check("ledger", False, str(exc), f"carefed ledger init --hospitals … --state-dir {state_dir}"))
    scheme = "http" if node.insecure else "https"
    verify: bool | ssl.SSLContext = (
        ssl.create_default_context(cafile=node.root_certificates) if node.root_certificates else True
    )
    try:
        healthy = httpx.get(f"{scheme}://{node.superlink}/health", verify=verify, timeout=3).status_code == 200
        checks.append(_Check("SuperLink", healthy, f"{scheme}://{node.superlink}", "check the address and TLS CA"))
    except httpx.HTTPError as exc:
        checks.append(
            _Check(
                "SuperLink",
                False,
                f"{node.superlink}: {exc}",
                "start it (carefed consortium superlink) or fix --superlink",
            )
        )
    return checks


@node_app.command("check")
def check(
    hospital: Annotated[str | None, typer.Option("--hospital", help="Preflight this node.")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Validate this data file alone.")] = None,
    schema: Annotated[Path | None, typer.Option("--schema", help="Schema for --data.")] = None,
    drop_bad_rows: Annotated[bool, typer.Option(help="Report how many rows would be dropped.")] = False,
    state_dir: StateDir = Path(".carefed"),
) -> None:
    """Preflight a node (table of pass/fail with fixes), or with --data/--schema validate a data file alone."""
    if data is not None or schema is not None:
        if data is None or schema is None:
            raise typer.BadParameter("give both --data and --schema", param_hint="--data/--schema")
        _validate_only(data, schema, drop_bad_rows)
        return
    if hospital is None:
        raise typer.BadParameter("give --hospital (preflight) or --data and --schema", param_hint="--hospital")
    checks = _preflight(hospital, state_dir)
    table = Table(title=f"Preflight of {hospital}")
    for column in ("check", "result", "detail", "fix"):
        table.add_column(column)
    for item in checks:
        table.add_row(item.name, "[green]pass" if item.ok else "[red]FAIL", item.detail, "" if item.ok else item.fix)
    Console().print(table)
    if not all(item.ok for item in checks):
        raise typer.Exit(code=1)


@node_app.command("start")
def start(hospital: Hospital, state_dir: StateDir = Path(".carefed")) -> None:
    """Start the node's worker and its SuperNode (connecting out to the SuperLink); run until Ctrl-C."""
    import sys
    import time

    from consortium.runtime import FlowerRuntime
    from hospital_node.config import NodeConfig

    node = NodeConfig.load(_node_dir(state_dir, hospital))
    with FlowerRuntime(node.node_dir / "flwr") as runtime:
        worker = runtime.spawn("worker", [sys.executable, "-m", "hospital_node.worker", str(node.node_dir)])
        runtime.start_supernode(
            hospital,
            {"hospital": hospital, "node-dir": str(node.node_dir)},
            superlink=node.superlink,
            root_certificates=None if node.insecure else node.root_certificates,
        )
        typer.echo(f"{hospital}: SuperNode → {node.superlink}; logs in {runtime.home / 'logs'}")
        try:
            while worker.poll() is None and runtime.supernodes[hospital].poll() is None:
                time.sleep(1)
            typer.echo("a node process exited; see the logs", err=True)
            raise typer.Exit(code=1)
        except KeyboardInterrupt:
            typer.echo("stopping")


@node_app.command("status")
def status(hospital: Hospital, state_dir: StateDir = Path(".carefed")) -> None:
    """The node's configuration, pseudonym table, worker, privacy budget and runs it trained in."""
    import json

    from fabric_network.ledger import LedgerError, open_ledger
    from hospital_node.config import NodeConfig
    from hospital_node.pseudonyms import PseudonymTable
    from hospital_node.worker import socket_path

    node = NodeConfig.load(_node_dir(state_dir, hospital))
    table = Table(title=f"Node {hospital}", show_header=False)
    table.add_row("config", str(node.node_dir / "node.toml"))
    table.add_row("data", str(node.data))
    table.add_row("SuperLink", node.superlink + (" (insecure)" if node.insecure else " (TLS)"))
    with PseudonymTable(node.pseudonym_table) as pseudonyms:
        table.add_row("pseudonyms", f"{len(pseudonyms)} patients")
    table.add_row("worker", "running" if socket_path(node.node_dir).exists() else "not running")
    try:
        with open_ledger(backend=node.ledger_backend, state_dir=node.ledger_state_dir, org=hospital) as ledger:
            budget = ledger.evaluate("PrivacyBudgetContract:read_budget", ledger.msp_id, node.purpose)
        table.add_row("privacy budget", f"ε spent {budget['spent']:.3f} of {budget['limit']:.3f} ({node.purpose})")
    except LedgerError as exc:
        table.add_row("privacy budget", f"unreadable: {exc}")
    for history in sorted((node.node_dir / "dp").glob("*.json")):
        record = json.loads(history.read_text(encoding="utf-8"))
        table.add_row(f"run {history.stem}", f"{len(record['slices'])} rounds, ε {record['epsilon_spent']:.3f}")
    Console().print(table)


@node_app.command("forget")
def forget(
    mrn: Annotated[str, typer.Argument(help="The patient's MRN at this hospital (it never leaves the node).")],
    hospital: Hospital,
    state_dir: StateDir = Path(".carefed"),
) -> None:
    """GDPR Art. 17: record the erasure on the ledger (pseudonym only), then delete the MRN → pseudonym entry."""
    from compliance.erasure import ErasureError, forget_patient

    try:
        erasure = forget_patient(state_dir, hospital, mrn)
    except ErasureError as exc:
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1) from None
    Console(soft_wrap=True).print(
        f"erased at {erasure.hospital}: the MRN no longer resolves to a pseudonym; erasure on the ledger in "
        f"transaction {erasure.tx_id} (block {erasure.block_number}"
        + (", recorded by an earlier attempt)" if erasure.repeated else ")")
    )
