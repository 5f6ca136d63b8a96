"""`carefed node …`: what hospital IT runs to set up, check and start a hospital node."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from carefed.options import DEFAULT_STATE_DIR, ENV_ORG, AsJson, StateDir, read_mrn

node_app = typer.Typer(help="Set up, check and run a hospital node.", no_args_is_help=True)

Hospital = Annotated[
    str, typer.Option("--hospital", envvar=ENV_ORG, help="The hospital's org name, e.g. hospital-a.", show_envvar=True)
]


def _node_dir(state_dir: Path, hospital: str) -> Path:
    from federation.layout import node_dir_for

    return node_dir_for(state_dir, hospital).resolve()


@node_app.command("init")
def init(
    hospital: Hospital,
    data: Annotated[
        Path, typer.Option("--data", help="Training data: CSV, FHIR R4 Bundle (.json), NDJSON, or a directory.")
    ],
    schema: Annotated[Path, typer.Option("--schema", help="Schema TOML (mrn_column, label_column, [[features]]).")],
    eval_data: Annotated[Path | None, typer.Option("--eval-data", help="Held-out data to evaluate models.")] = None,
    drop_bad_rows: Annotated[bool, typer.Option(help="Train without invalid rows instead of refusing.")] = False,
    superlink: Annotated[str, typer.Option(help="SuperLink address host:port.")] = "127.0.0.1:8000",
    root_certificates: Annotated[Path | None, typer.Option(help="Consortium CA certificate (TLS).")] = None,
    insecure: Annotated[bool, typer.Option(help="Connect without TLS (local experiments only).")] = False,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Create the node's configuration file, key directory, SuperNode and HE transport key pairs, pseudonym table."""
    from fabric_network.identities import IdentityError, hospital_names
    from hospital_node.config import NodeConfig
    from hospital_node.he_keys import ensure_transport_key
    from hospital_node.pseudonyms import PseudonymTable
    from hospital_node.site import ensure_supernode_auth_key

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
    auth_key = ensure_supernode_auth_key(node.keys_dir)
    transport_key = ensure_transport_key(node.keys_dir)
    PseudonymTable(node.pseudonym_table).close()
    typer.echo(f"wrote {config_path}")
    typer.echo(f"SuperNode key pair {auth_key} (+ .pub: register it with `flwr supernode register`)")
    typer.echo(f"HE transport key {transport_key}: publish it to the hospital that creates the consortium's HE key")
    typer.echo(f"next: `carefed node he-key create|accept …`, then `carefed node check --hospital {hospital}`")


@dataclass
class _Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _validate_only(data: Path, schema_path: Path, drop_bad_rows: bool, as_json: bool) -> None:
    """`node check --data --schema`: one line per problem, the FHIR cohort funnel; non-zero exit when any is bad."""
    from hospital_node.data import DataSchema, SchemaError, load_records
    from hospital_node.fhir_input import FhirInputError

    try:
        report = load_records(data, DataSchema.from_toml(schema_path))
    except (SchemaError, FhirInputError, FileNotFoundError, ValueError) as exc:
        if as_json:
            typer.echo(json.dumps({"ok": False, "error": str(exc)}))
        else:
            typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    # Any problem fails the check (with --drop-bad-rows it also says how many records training would drop).
    refused = bool(report.problems) or not report.records
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "ok": not refused,
                    "source": str(data),
                    "records": report.total_records,
                    "usable_records": len(report.records),
                    "problems": [str(p) for p in report.problems],
                    "ehr": report.ehr.to_json() if report.ehr is not None else None,
                },
                indent=2,
            )
        )
        if refused:
            raise typer.Exit(code=1)
        return
    if report.ehr is not None:
        from hospital_node.check_report import print_summary

        print_summary(Console(soft_wrap=True), report.ehr)
    for problem in report.problems:
        typer.echo(f"{data}: {problem}")
    if report.problems:
        action = f"would drop {report.bad_records}" if drop_bad_rows and not report.file_problems else "trains nothing"
        typer.echo(
            f"{len(report.problems)} problem(s) in {report.bad_records} of {report.total_records} records; {action}",
            err=True,
        )
    if not report.records:
        typer.echo("no valid record left to train on", err=True)
    if refused:
        raise typer.Exit(code=1)
    typer.echo(f"OK: {len(report.records)} valid records")


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
            detail = f"{len(report.records)} valid of {report.total_records}"
            if report.problems:
                detail += f"; {len(report.problems)} problem(s)" + (" (dropped)" if node.drop_bad_rows else "")
            checks.append(_Check(label, not report.file_problems and (node.drop_bad_rows or report.ok), detail, fix))
    except (SchemaError, FileNotFoundError, ValueError) as exc:
        checks.append(_Check("schema/data", False, str(exc), "fix the file named, then re-run the check"))
    secret = node.he_secret_context
    checks.append(
        _Check(
            "CKKS secret key",
            secret.exists(),
            str(secret),
            f"carefed node he-key accept SEALED --hospital {hospital} (one machine: carefed keys ceremony)",
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
    hospital: Annotated[
        str | None, typer.Option("--hospital", envvar=ENV_ORG, show_envvar=True, help="Preflight this node.")
    ] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Validate this data (file or directory) alone.")] = None,
    schema: Annotated[Path | None, typer.Option("--schema", help="Schema for --data.")] = None,
    drop_bad_rows: Annotated[bool, typer.Option(help="Report how many rows would be dropped.")] = False,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    as_json: AsJson = False,
) -> None:
    """Preflight a node (table of pass/fail with fixes), or with --data/--schema validate a data file alone."""
    if data is not None or schema is not None:
        if data is None or schema is None:
            raise typer.BadParameter("give both --data and --schema", param_hint="--data/--schema")
        _validate_only(data, schema, drop_bad_rows, as_json)
        return
    if hospital is None:
        raise typer.BadParameter("give --hospital (preflight) or --data and --schema", param_hint="--hospital")
    checks = _preflight(hospital, state_dir)
    if as_json:
        typer.echo(json.dumps([asdict(item) for item in checks], indent=2))
        if not all(item.ok for item in checks):
            raise typer.Exit(code=1)
        return
    table = Table(title=f"Preflight of {hospital}")
    for column in ("check", "result", "detail", "fix"):
        table.add_column(column)
    for item in checks:
        table.add_row(item.name, "[green]pass" if item.ok else "[red]FAIL", item.detail, "" if item.ok else item.fix)
    Console().print(table)
    if not all(item.ok for item in checks):
        raise typer.Exit(code=1)


@node_app.command("join")
def join(
    bundle: Annotated[Path, typer.Argument(metavar="BUNDLE", help="The consortium's join bundle (`consortium up`).")],
    hospital: Hospital,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Join the consortium of a join bundle: its channel, its SuperLink (TLS, this node's registered key)."""
    from federation.bundles import JoinBundle, read_bundle
    from hospital_node.site import join as join_site

    node = join_site(state_dir.resolve(), hospital, read_bundle(bundle, JoinBundle))
    typer.echo(f"{hospital} joined: SuperLink {node.superlink} (TLS), ledger on Fabric; next `carefed node start`")


def _start_fabric_peer(state_dir: Path, timeout_s: float) -> None:
    """The hospital's Fabric peer and chaincode server (across hosts), until the ledger answers."""
    from fabric_network.fabric import sites
    from fabric_network.fabric.install import default_fabric_home

    waiting = sites.start_hospital_peer(state_dir, default_fabric_home())
    if waiting:
        typer.echo(f"ledger: {waiting}; waiting (every hospital's `node start` approves it)")
    sites.wait_ready(state_dir, timeout_s)
    typer.echo("ledger: ready (the chaincode answers, a majority of hospitals can endorse)")


@node_app.command("start")
def start(
    hospital: Hospital,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    ledger_timeout: Annotated[
        float, typer.Option(min=1, help="Seconds to wait for the ledger (all hospitals approving the chaincode).")
    ] = 900.0,
) -> None:
    """Start the node's worker and its SuperNode (connecting out to the SuperLink) — after a joined node's Fabric
    peer and chaincode server; run until Ctrl-C or SIGTERM, then stop them all."""
    import sys
    import time

    from carefed import __version__
    from fabric_network.fabric import network, sites
    from federation.runtime import FlowerRuntime
    from hospital_node.config import NodeConfig
    from hospital_node.heartbeat import Heartbeat

    node = NodeConfig.load(_node_dir(state_dir, hospital))
    joined = sites.has_channel(state_dir.resolve())
    try:
        if joined:
            _start_fabric_peer(state_dir.resolve(), ledger_timeout)
        with FlowerRuntime(node.node_dir / "flwr") as runtime:
            worker_argv = [sys.executable, "-m", "hospital_node.worker", str(node.node_dir)]
            worker = runtime.spawn("worker", worker_argv)
            runtime.start_supernode(
                hospital,
                {"hospital": hospital, "node-dir": str(node.node_dir)},
                superlink=node.superlink,
                root_certificates=None if node.insecure else node.root_certificates,
                # SuperNode authentication (TLS only): the consortium registered this key's public half.
                auth_key=None if node.insecure or not node.supernode_auth_key.exists() else node.supernode_auth_key,
            )
            typer.echo(f"{hospital}: SuperNode → {node.superlink}; logs in {runtime.home / 'logs'}")
            heartbeat = Heartbeat.from_environment(__version__)  # the service's nodes page; None without a service
            if heartbeat is not None:
                heartbeat.start("idle")
            try:
                while runtime.supernodes[hospital].poll() is None:
                    if worker.poll() is not None:  # a crashed worker costs the hospital one round, not the node
                        typer.echo(f"worker exited with code {worker.returncode}; restarting it", err=True)
                        time.sleep(5)
                        worker = runtime.spawn("worker", worker_argv)
                    time.sleep(1)
                typer.echo("the SuperNode exited; see the logs", err=True)
                if heartbeat is not None:
                    heartbeat.stop("failed")
                raise typer.Exit(code=1)
            except KeyboardInterrupt:
                typer.echo("stopping")
                if heartbeat is not None:
                    heartbeat.stop("stopped")
    finally:
        if joined:
            network.down(state_dir.resolve())


@node_app.command("consent")
def consent(
    mrns: Annotated[Path, typer.Argument(metavar="MRNS", help="One MRN per line ('-' reads standard input).")],
    hospital: Hospital,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Record these patients' active consent for the node's purpose (pseudonyms on the ledger, MRNs stay here)."""
    import sys

    from fabric_network.ledger import open_ledger
    from hospital_node.config import NodeConfig
    from hospital_node.consent import record_consents
    from hospital_node.pseudonyms import PseudonymTable

    node = NodeConfig.load(_node_dir(state_dir, hospital))
    text = sys.stdin.read() if str(mrns) == "-" else mrns.read_text(encoding="utf-8")
    wanted = [line.strip() for line in text.splitlines() if line.strip()]
    if not wanted:
        raise typer.BadParameter(f"{mrns} lists no MRN (one per line)", param_hint="MRNS")
    with (
        open_ledger(backend=node.ledger_backend, state_dir=node.ledger_state_dir, org=hospital) as ledger,
        PseudonymTable(node.pseudonym_table) as table,
    ):
        recorded = record_consents(ledger, table, wanted, node.purpose)
    typer.echo(f"{len(recorded)} consents recorded for {node.purpose} by {hospital}")


RunId = Annotated[str, typer.Argument(metavar="RUN", help="The run id of the proposal on the ledger.")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Vote without asking for confirmation.")]


def _vote(run_id: str, hospital: str, state_dir: Path, decision: str, yes: bool) -> None:
    """Show the run proposal, ask, and cast this hospital's vote with its own ledger identity."""
    from fabric_network.ledger import LedgerError, open_ledger
    from hospital_node.config import NodeConfig
    from hospital_node.governance import NotApproved, read_run, summary, vote

    node = NodeConfig.load(_node_dir(state_dir, hospital))
    console = Console()
    with open_ledger(backend=node.ledger_backend, state_dir=node.ledger_state_dir, org=hospital) as ledger:
        try:
            run = read_run(ledger, run_id)
        except NotApproved as exc:
            raise typer.BadParameter(str(exc), param_hint="RUN") from None
        table = Table(title=f"Run proposal {run_id}", show_header=False)
        for label, value in summary(run):
            table.add_row(label, value)
        console.print(table)
        if not yes and not typer.confirm(f"{decision} run {run_id} as {ledger.msp_id}?"):
            raise typer.Exit(code=1)
        try:
            result = vote(ledger, run_id, decision)
        except LedgerError as exc:
            typer.echo(f"vote refused: {exc}", err=True)
            raise typer.Exit(code=1) from None
    counted = result["approval"]
    console.print(
        f"{ledger.msp_id} voted {decision}: {len(counted['approved'])} of {len(run['hospitals'])} approved "
        f"({counted['needed']} needed); "
        + ("the run may start" if counted["majority"] else "the run may not start yet"),
        soft_wrap=True,
    )


@node_app.command("approve")
def approve(run_id: RunId, hospital: Hospital, state_dir: StateDir = Path(".carefed"), yes: Yes = False) -> None:
    """Approve a proposed training run for this hospital (shows the proposal first)."""
    _vote(run_id, hospital, state_dir, "approve", yes)


@node_app.command("reject")
def reject(run_id: RunId, hospital: Hospital, state_dir: StateDir = Path(".carefed"), yes: Yes = False) -> None:
    """Reject a proposed training run: this hospital's node will not train in it, whatever the majority decides."""
    _vote(run_id, hospital, state_dir, "reject", yes)


@node_app.command("status")
def status(hospital: Hospital, state_dir: StateDir = DEFAULT_STATE_DIR, as_json: AsJson = False) -> None:
    """The node's configuration, pseudonym table, worker, its Fabric peer (a joined node), privacy budget and the
    runs it trained in."""
    from fabric_network.fabric import network, sites
    from fabric_network.ledger import LedgerError, open_ledger
    from hospital_node.config import NodeConfig
    from hospital_node.pseudonyms import PseudonymTable
    from hospital_node.worker import socket_path

    node = NodeConfig.load(_node_dir(state_dir, hospital))
    with PseudonymTable(node.pseudonym_table) as pseudonyms:
        patients = len(pseudonyms)
    facts: dict[str, Any] = {
        "config": str(node.node_dir / "node.toml"),
        "data": str(node.data),
        "superlink": node.superlink,
        "tls": not node.insecure,
        "pseudonyms": patients,
        "worker_running": socket_path(node.node_dir).exists(),
        "purpose": node.purpose,
        "ledger_backend": node.ledger_backend,
    }
    if node.ledger_backend == "fabric" and sites.has_channel(node.ledger_state_dir):
        # A joined node runs its own peer and chaincode server (`node start`): are they up and healthy?
        facts["fabric"] = {p.name: p.health for p in network.status(node.ledger_state_dir)}
    runs: dict[str, dict[str, Any]] = {}
    try:
        with open_ledger(backend=node.ledger_backend, state_dir=node.ledger_state_dir, org=hospital) as ledger:
            facts["budget"] = ledger.evaluate("PrivacyBudgetContract:read_budget", ledger.msp_id, node.purpose)
            for charge in ledger.evaluate("PrivacyBudgetContract:list_budget_charges", ledger.msp_id, node.purpose):
                run = runs.setdefault(charge["run_id"], {"rounds": 0, "epsilon_spent": 0.0})
                run["rounds"] += 1
                run["epsilon_spent"] += float(charge["epsilon"])
    except LedgerError as exc:
        facts["budget_error"] = str(exc)
    facts["runs"] = runs  # from the hospital's own charges on the ledger
    if as_json:
        typer.echo(json.dumps(facts, indent=2, default=str))
        return
    table = Table(title=f"Node {hospital}", show_header=False)
    table.add_row("config", facts["config"])
    table.add_row("data", facts["data"])
    table.add_row("SuperLink", node.superlink + (" (TLS)" if facts["tls"] else " (insecure)"))
    table.add_row("pseudonyms", f"{patients} patients")
    table.add_row("worker", "running" if facts["worker_running"] else "not running")
    if "fabric" in facts:
        processes = ", ".join(f"{name} {health}" for name, health in facts["fabric"].items())
        table.add_row("ledger", f"Fabric: {processes or 'not running (carefed node start)'}")
    budget = facts.get("budget")
    table.add_row(
        "privacy budget",
        f"ε spent {budget['spent']:.3f} of {budget['limit']:.3f} ({node.purpose})"
        if budget
        else f"unreadable: {facts['budget_error']}",
    )
    for run, record in facts["runs"].items():
        table.add_row(f"run {run}", f"{record['rounds']} rounds, ε {record['epsilon_spent']:.3f}")
    Console().print(table)


@node_app.command("forget")
def forget(hospital: Hospital, state_dir: StateDir = DEFAULT_STATE_DIR) -> None:
    """GDPR Art. 17: record the erasure on the ledger (pseudonym only), then delete the MRN → pseudonym entry.

    The MRN is read from stdin (e.g. `carefed node forget --hospital H < mrn.txt`) or a hidden prompt, never
    from the command line, where shell history and `ps` would keep it.
    """
    from hospital_node.erasure import ErasureError, forget_patient

    try:
        erasure = forget_patient(state_dir, hospital, read_mrn(hospital))
    except ErasureError as exc:
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1) from None
    Console(soft_wrap=True).print(
        f"erased at {erasure.hospital}: the MRN no longer resolves to a pseudonym; erasure on the ledger in "
        f"transaction {erasure.tx_id} (block {erasure.block_number}"
        + (", recorded by an earlier attempt)" if erasure.repeated else ")")
    )


@node_app.command("pseudonym")
def pseudonym(hospital: Hospital, state_dir: StateDir = DEFAULT_STATE_DIR) -> None:
    """A patient's pseudonym at this hospital, for a GDPR access request (`carefed report access PSEUDONYM`).

    The MRN is read from stdin or a hidden prompt, never argv; only the pseudonym is printed, so it can be piped:
    `carefed node pseudonym --hospital H < mrn.txt | carefed report access -`.
    """
    from hospital_node.erasure import ErasureError, resolve_pseudonym

    try:
        typer.echo(resolve_pseudonym(state_dir, hospital, read_mrn(hospital)))
    except ErasureError as exc:
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1) from None


he_key_app = typer.Typer(
    help="The consortium's CKKS key: draw it and seal it to the other hospitals, or accept the one sealed to you.",
    no_args_is_help=True,
)
node_app.add_typer(he_key_app, name="he-key")
Replace = Annotated[
    bool, typer.Option("--replace", help="Rotate: replace the key this hospital holds (a new key for a new run).")
]


@he_key_app.command("create")
def he_key_create(
    hospital: Hospital,
    key_id: Annotated[str, typer.Option("--key-id", help="A new id for the key, e.g. he-2026-12 (a new key per run).")],
    recipients: Annotated[str, typer.Option("--recipients", help="The other hospitals, comma-separated.")],
    recipient_keys: Annotated[
        Path, typer.Option("--recipient-keys", help="Directory of the recipients' transport keys, <hospital>.pub each.")
    ],
    outbox: Annotated[
        Path | None,
        typer.Option("--outbox", help="Where the public context and sealed keys go [<node>/he-outbox/KEY]."),
    ] = None,
    replace: Replace = False,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Draw the consortium's CKKS key, record it on the ledger, keep it, and seal it to each recipient."""
    from fabric_network.identities import IdentityError, hospital_names
    from fabric_network.ledger import open_ledger
    from federation.key_transport import load_public_key
    from hospital_node.config import NodeConfig
    from hospital_node.he_keys import create_key

    node = NodeConfig.load(_node_dir(state_dir, hospital))
    try:
        if recipients.strip().isdigit():
            raise IdentityError("--recipients: name the other hospitals, e.g. hospital-b,hospital-c (not a count)")
        names = hospital_names(recipients)
    except IdentityError as exc:
        raise typer.BadParameter(str(exc), param_hint="--recipients") from exc
    public_keys = {}
    for name in names:
        path = recipient_keys / f"{name}.pub"
        if not path.is_file():
            raise typer.BadParameter(
                f"no {path}: {name} runs `carefed node init` and sends its keys/he-transport.pub (saved as {name}.pub)",
                param_hint="--recipient-keys",
            )
        public_keys[name] = load_public_key(path.read_bytes(), str(path))
    target = outbox if outbox is not None else node.node_dir / "he-outbox" / key_id
    with open_ledger(backend=node.ledger_backend, state_dir=node.ledger_state_dir, org=hospital) as ledger:
        created = create_key(ledger, node.keys_dir, hospital, key_id, public_keys, target, replace=replace)
    console = Console(soft_wrap=True)
    console.print(
        f"key {key_id} recorded on the ledger by {ledger.msp_id}; fingerprint {created.manifest['fingerprint']}"
    )
    console.print(f"{hospital}'s secret context (mode 0600): {created.secret_context}")
    console.print(f"outbox for the consortium: {created.outbox} (it keeps public.ctx and ceremony.json)")
    for name, path in created.sealed.items():
        console.print(f"  relay to {name}: {path}  (then: carefed node he-key accept {path.name} --hospital {name})")


@he_key_app.command("accept")
def he_key_accept(
    sealed: Annotated[Path, typer.Argument(metavar="SEALED", help="The bundle sealed to this hospital.")],
    hospital: Hospital,
    replace: Replace = False,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Check a sealed key against the ledger, open it, install it as this hospital's CKKS key, record acceptance."""
    from fabric_network.ledger import open_ledger
    from hospital_node.config import NodeConfig
    from hospital_node.he_keys import accept_key, installed_key

    node = NodeConfig.load(_node_dir(state_dir, hospital))
    bundle = sealed.read_bytes()
    with open_ledger(backend=node.ledger_backend, state_dir=node.ledger_state_dir, org=hospital) as ledger:
        path = accept_key(ledger, node.keys_dir, hospital, bundle, replace=replace)
    held = installed_key(node.keys_dir) or {}
    Console(soft_wrap=True).print(
        f"installed key {held.get('key_id')} from {held.get('creator')} at {path} (mode 0600); "
        f"acceptance recorded on the ledger by {ledger.msp_id}"
    )
