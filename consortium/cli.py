"""`carefed consortium …` and `carefed keys …`: the consortium operator's commands."""

from pathlib import Path
from typing import Annotated

import typer

from carefed.options import DEFAULT_STATE_DIR, Backend, LedgerBackend, StateDir

consortium_app = typer.Typer(help="Run the consortium's SuperLink and training runs.", no_args_is_help=True)
#: `carefed keys ceremony` plays every organisation on one machine, so harness/cli.py defines it (carefed/cli.py).
keys_app = typer.Typer(help="CKKS key ceremony for the hospitals and the aggregator.", no_args_is_help=True)


@consortium_app.command("superlink")
def superlink(
    state_dir: StateDir = DEFAULT_STATE_DIR,
    host: Annotated[
        str, typer.Option(help="Address to listen on: 0.0.0.0 serves hospitals on other machines.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the Fleet, Control and Runtime APIs.")] = 9092,
    san: Annotated[
        list[str] | None,
        typer.Option(
            "--san",
            help="A DNS name or IP address the hospitals use to reach this SuperLink (repeatable); the TLS "
            "certificate names it (loopback is always named).",
        ),
    ] = None,
    supernode_auth: Annotated[
        bool,
        typer.Option(help="Accept only SuperNodes whose public key was registered (`consortium register-node`)."),
    ] = True,
    insecure: Annotated[
        bool, typer.Option(help="Plain HTTP, no SuperNode authentication (local experiments).")
    ] = False,
) -> None:
    """Start the consortium's SuperLink (TLS with the consortium CA) and keep it running until Ctrl-C or SIGTERM."""
    import time

    from federation.runtime import FlowerRuntime
    from federation.tls import ensure_superlink_tls

    tls = None if insecure else ensure_superlink_tls(state_dir.resolve() / "consortium" / "tls", tuple(san or ()))
    runtime = FlowerRuntime(
        state_dir.resolve() / "flwr", tls=tls, superlink_host=host, supernode_auth=supernode_auth and not insecure
    )
    with runtime:
        address = runtime.start_superlink(port=port)
        typer.echo(
            f"SuperLink on {host}:{port} (this machine: {address})"
            + ("" if tls is None else f"; hospitals need CA {tls.ca_cert}")
            + ("; SuperNode authentication on" if runtime.supernode_auth else "")
        )
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            typer.echo("stopping")


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
    state_dir: StateDir = DEFAULT_STATE_DIR,
    backend: Backend = LedgerBackend.embedded,
) -> None:
    """Propose a training run on the ledger; it starts once a majority of its hospitals approved it.

    Start the run later (`flwr run`) with the same run id and settings: the ServerApp refuses settings that
    differ from the proposal.
    """
    from consortium.proposals import register_run
    from fabric_network.identities import IdentityError, hospital_names
    from fabric_network.ledger import LedgerError

    try:
        names = hospital_names(hospitals)
    except IdentityError as exc:
        raise typer.BadParameter(str(exc), param_hint="--hospitals") from exc
    if not spec.exists():
        raise typer.BadParameter(f"{spec} does not exist", param_hint="--spec")
    config = {"hospitals": ",".join(names), "num-rounds": rounds, "epsilon": epsilon, "spec": spec.read_text()}
    try:
        register_run(state_dir.resolve(), run_id, config, backend=backend.value)
    except LedgerError as exc:
        raise typer.BadParameter(str(exc), param_hint="RUN") from None
    typer.echo(f"run {run_id} proposed; each hospital now runs `carefed node approve {run_id} --hospital NAME`")
