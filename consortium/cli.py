"""`carefed consortium …` and `carefed keys …`: the consortium operator's commands."""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from carefed.options import DEFAULT_STATE_DIR, Backend, LedgerBackend, StateDir

consortium_app = typer.Typer(help="Run the consortium's SuperLink and training runs.", no_args_is_help=True)
keys_app = typer.Typer(help="CKKS key ceremony for the hospitals and the aggregator.", no_args_is_help=True)


@keys_app.command("ceremony")
def ceremony(
    hospitals: Annotated[str, typer.Option("--hospitals", help="A count (3) or comma-separated hospital names.")],
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Create the consortium's CKKS key: secret context per hospital, public context for the aggregator."""
    from consortium.keys import run_ceremony
    from fabric_network.identities import IdentityError, hospital_names

    try:
        names = hospital_names(hospitals)
    except IdentityError as exc:
        raise typer.BadParameter(str(exc), param_hint="--hospitals") from exc
    result = run_ceremony(state_dir, names)
    console = Console()
    console.print(f"public context (aggregator): {result.public_context}")
    for name, path in result.secret_contexts.items():
        console.print(f"secret context ({name}, mode 0600): {path}")
    console.print(f"key fingerprint {result.fingerprint}; parameters {result.parameters}")


@consortium_app.command("superlink")
def superlink(
    state_dir: StateDir = DEFAULT_STATE_DIR,
    insecure: Annotated[bool, typer.Option(help="Plain HTTP (local experiments only).")] = False,
) -> None:
    """Start the consortium's SuperLink (TLS with the consortium CA) and keep it running until Ctrl-C."""
    import time

    from federation.runtime import FlowerRuntime
    from federation.tls import ensure_superlink_tls

    tls = None if insecure else ensure_superlink_tls(state_dir.resolve() / "consortium" / "tls")
    with FlowerRuntime(state_dir.resolve() / "flwr", tls=tls) as runtime:
        address = runtime.start_superlink()
        typer.echo(f"SuperLink on {address}" + ("" if tls is None else f"; hospitals need CA {tls.ca_cert}"))
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            typer.echo("stopping")


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
