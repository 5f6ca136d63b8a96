"""`carefed consortium …` and `carefed keys …`: the consortium operator's commands."""

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from carefed.options import DEFAULT_STATE_DIR, Backend, LedgerBackend, StateDir

if TYPE_CHECKING:
    from federation.runtime import FlowerRuntime
    from federation.tls import SuperLinkTls

consortium_app = typer.Typer(help="Run the consortium's SuperLink and training runs.", no_args_is_help=True)
#: `carefed keys ceremony` plays every organisation on one machine, so harness/cli.py defines it (carefed/cli.py).
keys_app = typer.Typer(help="CKKS key ceremony for the hospitals and the aggregator.", no_args_is_help=True)


Host = Annotated[str, typer.Option(help="Address to listen on: 0.0.0.0 serves hospitals on other machines.")]
Port = Annotated[int, typer.Option(min=1, max=65535, help="Port of the Fleet, Control and Runtime APIs.")]
San = Annotated[
    list[str] | None,
    typer.Option(
        "--san",
        help="A DNS name or IP address the hospitals use to reach this SuperLink (repeatable); the TLS "
        "certificate names it (loopback is always named).",
    ),
]


def _serve_superlink(
    state: Path,
    host: str,
    port: int,
    sans: tuple[str, ...],
    *,
    auth: bool,
    insecure: bool,
    started: "Callable[[FlowerRuntime, SuperLinkTls | None], None] | None" = None,
) -> None:
    """Run the SuperLink (TLS with the consortium CA unless insecure) until Ctrl-C or SIGTERM, then stop it and
    everything it started; ``started(runtime, tls)`` runs once it is healthy."""
    import time

    from federation.runtime import FlowerRuntime
    from federation.tls import ensure_superlink_tls

    tls = None if insecure else ensure_superlink_tls(state / "consortium" / "tls", sans)
    runtime = FlowerRuntime(state / "flwr", tls=tls, superlink_host=host, supernode_auth=auth and not insecure)
    with runtime:
        address = runtime.start_superlink(port=port)
        typer.echo(
            f"SuperLink on {host}:{port} (this machine: {address})"
            + ("" if tls is None else f"; hospitals need CA {tls.ca_cert}")
            + ("; SuperNode authentication on" if runtime.supernode_auth else "")
        )
        if started is not None:
            started(runtime, tls)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            typer.echo("stopping")


@consortium_app.command("superlink")
def superlink(
    state_dir: StateDir = DEFAULT_STATE_DIR,
    host: Host = "127.0.0.1",
    port: Port = 9092,
    san: San = None,
    supernode_auth: Annotated[
        bool,
        typer.Option(help="Accept only SuperNodes whose public key was registered (`consortium register-node`)."),
    ] = True,
    insecure: Annotated[
        bool, typer.Option(help="Plain HTTP, no SuperNode authentication (local experiments).")
    ] = False,
) -> None:
    """Start the consortium's SuperLink (TLS with the consortium CA) and keep it running until Ctrl-C or SIGTERM."""
    _serve_superlink(state_dir.resolve(), host, port, tuple(san or ()), auth=supernode_auth, insecure=insecure)


@consortium_app.command("add-hospital")
def add_hospital(
    bundle: Annotated[
        Path, typer.Argument(metavar="BUNDLE", help="The hospital's org bundle (`carefed org init` wrote it).")
    ],
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Admit a hospital from its public org bundle: a channel member, a registered SuperNode key, its transport key."""
    from consortium.site import add_hospital as admit
    from federation.bundles import HospitalBundle, read_bundle

    admitted = read_bundle(bundle, HospitalBundle)
    added = admit(state_dir.resolve(), admitted)
    typer.echo(f"{admitted.org} {'admitted' if added else 'was admitted already'}; next: `carefed consortium up`")


@consortium_app.command("up")
def up(
    host: Annotated[str, typer.Option(help="This machine's address the hospitals dial (in the TLS certificates).")],
    state_dir: StateDir = DEFAULT_STATE_DIR,
    port: Port = 9092,
    orderer_port: Annotated[
        int, typer.Option(min=1, max=65533, help="The orderer's port (+1, +2 on loopback).")
    ] = 7050,
    san: San = None,
) -> None:
    """Create the channel from the admitted hospitals (once), start the orderer and the SuperLink, write the join
    bundle for the hospitals; run until Ctrl-C or SIGTERM, then stop them all."""
    from consortium.site import register_supernodes, write_join_bundle
    from fabric_network.fabric import network, sites
    from fabric_network.fabric.install import default_fabric_home
    from federation.runtime import FlowerRuntime
    from federation.tls import SuperLinkTls

    state = state_dir.resolve()
    home = default_fabric_home()
    sites.create_channel(state, home, host, orderer_port)
    try:
        sites.start_consortium_orderer(state, home)
        typer.echo(f"orderer on {host}:{orderer_port}, channel {network.CHANNEL}")

        def started(runtime: FlowerRuntime, tls: SuperLinkTls | None) -> None:
            assert tls is not None, "`up` always serves TLS"
            registered = register_supernodes(state, runtime)
            typer.echo(f"SuperNode keys registered: {', '.join(registered) or 'none new'}")
            typer.echo(f"join bundle for the hospitals: {write_join_bundle(state, f'{host}:{port}', tls)}")

        _serve_superlink(state, "0.0.0.0", port, (host, *(san or ())), auth=True, insecure=False, started=started)
    finally:
        network.down(state)


@consortium_app.command("init-ledger")
def init_ledger(
    epsilon_limit: Annotated[
        float, typer.Option("--epsilon-limit", min=0.0, help="Each hospital's DP budget limit ε for the purpose.")
    ],
    purpose: Annotated[str, typer.Option(help="The purpose of use the limit is for.")] = "HRESCH",
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Record the channel's hospitals as the consortium's voting members and set each one's ε limit (once the
    hospitals' nodes have started: the ledger answers when all of them approved the chaincode)."""
    from fabric_network.fabric import sites
    from fabric_network.ledger import open_ledger

    state = state_dir.resolve()
    hospitals = sites.channel_definition(state).members
    with open_ledger(backend="fabric", state_dir=state, org="consortium") as ledger:
        if not ledger.evaluate("GovernanceContract:read_members")["hospitals"]:
            ledger.submit("GovernanceContract:init_members", [h.msp_id for h in hospitals])
        for hospital in hospitals:
            ledger.submit("PrivacyBudgetContract:set_budget_limit", hospital.msp_id, purpose, repr(epsilon_limit))
    typer.echo(f"members: {', '.join(h.name for h in hospitals)}; ε limit {epsilon_limit} each for {purpose}")


@consortium_app.command("install-he-key")
def install_he_key(
    outbox: Annotated[
        Path, typer.Argument(metavar="OUTBOX", help="public.ctx and ceremony.json from the creating hospital.")
    ],
    state_dir: StateDir = DEFAULT_STATE_DIR,
    backend: Backend = LedgerBackend.fabric,
) -> None:
    """Take the consortium's HE public context, once the ledger confirms the creating hospital recorded it."""
    from consortium.keys import install_public_context
    from fabric_network.ledger import open_ledger

    state = state_dir.resolve()
    with open_ledger(backend=backend.value, state_dir=state, org="consortium") as ledger:
        path = install_public_context(state, outbox, ledger)
    typer.echo(f"public context installed at {path} (no secret key)")


@consortium_app.command("register-node")
def register_node(
    public_key: Annotated[
        Path, typer.Argument(metavar="PUBLIC_KEY", help="The hospital's SuperNode key (keys/supernode-auth.pub).")
    ],
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Let a hospital's SuperNode connect to the running SuperLink (SuperNode authentication)."""
    from federation.runtime import CONNECTION_NAME, FlowerRuntime

    home = state_dir.resolve() / "flwr"
    if not (home / "config.toml").exists():
        raise typer.BadParameter(f"no SuperLink was started from {state_dir}: run `carefed consortium superlink`")
    if not public_key.is_file() or not public_key.read_text(errors="replace").startswith("ecdsa-sha2-nistp"):
        raise typer.BadParameter(
            f"{public_key} is not an OpenSSH EC public key (the node's keys/supernode-auth.pub)",
            param_hint="PUBLIC_KEY",
        )
    FlowerRuntime(home).register_supernode(public_key.resolve())
    typer.echo(f"registered {public_key} with the SuperLink ({CONNECTION_NAME} connection in {home})")


@consortium_app.command("propose")
def propose(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="The run id the ServerApp will be started with.")],
    hospitals: Annotated[str, typer.Option("--hospitals", help="Comma-separated hospital names of the run.")],
    spec: Annotated[Path, typer.Option("--spec", help="The model spec JSON (features and their ranges).")],
    rounds: Annotated[int, typer.Option("--rounds", min=1)] = 3,
    epsilon: Annotated[float, typer.Option("--epsilon", help="DP target ε per hospital for the whole run.")] = 3.0,
    min_hospitals: Annotated[
        int, typer.Option("--min-hospitals", min=1, help="Fewest hospitals a round may aggregate.")
    ] = 2,
    round_timeout: Annotated[
        float, typer.Option("--round-timeout", min=1, help="Seconds a round waits for a hospital before dropping it.")
    ] = 120.0,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    backend: Backend = LedgerBackend.embedded,
) -> None:
    """Propose a training run on the ledger; it starts once a majority of its hospitals approved it.

    Start the run later (`flwr run`) with the same run id and settings: the ServerApp refuses settings that
    differ from the proposal.
    """
    from consortium.proposals import register_run
    from consortium.runs import save_run_config
    from fabric_network.identities import IdentityError, hospital_names
    from fabric_network.ledger import LedgerError

    try:
        names = hospital_names(hospitals)
    except IdentityError as exc:
        raise typer.BadParameter(str(exc), param_hint="--hospitals") from exc
    if not spec.exists():
        raise typer.BadParameter(f"{spec} does not exist", param_hint="--spec")
    config = {
        "hospitals": ",".join(names),
        "num-rounds": rounds,
        "epsilon": epsilon,
        "min-participants": min_hospitals,
        "round-timeout": round_timeout,
        "spec": spec.read_text(),
        "ledger-backend": backend.value,
    }
    try:
        register_run(state_dir.resolve(), run_id, config, backend=backend.value)
    except LedgerError as exc:
        raise typer.BadParameter(str(exc), param_hint="RUN") from None
    save_run_config(state_dir.resolve(), run_id, config)
    typer.echo(f"run {run_id} proposed; each hospital now runs `carefed node approve {run_id} --hospital NAME`")


@consortium_app.command("run")
def run(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="A run proposed with `carefed consortium propose`.")],
    resume: Annotated[
        bool, typer.Option(help="Continue a started run whose aggregator stopped (crash, reboot) from its checkpoint.")
    ] = False,
    timeout: Annotated[float, typer.Option(min=1, help="Give up following after this many seconds.")] = 7200.0,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Start a proposed run on the standing SuperLink (`consortium superlink`) and follow it round by round.

    The run starts only if a majority of its hospitals approved it; each approving hospital's node must be
    running. With --resume a crashed run continues after its last checkpointed round, or ends as failed.
    """
    from rich.console import Console

    from consortium.runs import follow_run, progress_printer, saved_run_config, submit_run, summary_lines
    from fabric_network.ledger import open_ledger
    from federation.runtime import FlowerRuntime

    state = state_dir.resolve()
    if not (state / "flwr" / "config.toml").exists():
        raise typer.BadParameter(f"no SuperLink was started from {state_dir}: run `carefed consortium superlink`")
    try:
        backend = str(saved_run_config(state, run_id).get("ledger-backend", "embedded"))
    except FileNotFoundError as exc:
        raise typer.BadParameter(str(exc), param_hint="RUN") from None
    with open_ledger(backend=backend, state_dir=state, org="consortium") as ledger:
        status = ledger.evaluate("LineageContract:read_run", run_id)["status"]
    if status != "proposed" and not (resume and status == "started"):
        fix = "--resume continues it after a crash" if status == "started" else "propose a new run"
        raise typer.BadParameter(f"run {run_id} is {status} already ({fix})", param_hint="RUN")
    runtime = FlowerRuntime(state / "flwr")
    flower_run = submit_run(runtime, state, run_id, resume=resume)
    console = Console()
    report = follow_run(runtime, state, run_id, flower_run, progress_printer(console.print), timeout)
    for line in summary_lines(run_id, report):
        console.print(line)
    if report.results["status"] != "completed":
        raise typer.Exit(code=1)


@consortium_app.command("runs")
def runs(
    state_dir: StateDir = DEFAULT_STATE_DIR,
    backend: Backend = LedgerBackend.embedded,
) -> None:
    """The runs proposed from this state directory: their state on the ledger and their last round."""
    import json

    from rich.console import Console
    from rich.table import Table

    from consortium.runs import results_path, saved_run_ids
    from fabric_network.ledger import LedgerError, open_ledger

    if not (state_dir / "runs").is_dir():
        raise typer.BadParameter(f"no run was proposed from {state_dir} (no runs/ in it)", param_hint="--state-dir")
    table = Table("run", "ledger", "rounds", "last status")
    with open_ledger(backend=backend.value, state_dir=state_dir.resolve(), org="consortium") as ledger:
        for run_id in saved_run_ids(state_dir.resolve()):
            try:
                record = ledger.evaluate("LineageContract:read_run", run_id)
                status = record["status"] + (f" ({record['end']['reason']})" if "end" in record else "")
            except LedgerError:
                status = "not on the ledger"
            path = results_path(state_dir.resolve(), run_id)
            results = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"rounds": [], "status": ""}
            table.add_row(run_id, status, str(len(results["rounds"])), str(results["status"]))
    Console().print(table)
