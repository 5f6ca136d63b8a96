"""`carefed consortium …`, `carefed keys …` and `carefed demo`: the consortium operator's commands."""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

consortium_app = typer.Typer(help="Run the consortium's SuperLink and training runs.", no_args_is_help=True)
keys_app = typer.Typer(help="CKKS key ceremony for the hospitals and the aggregator.", no_args_is_help=True)

StateDir = Annotated[Path, typer.Option("--state-dir", help="CareFed state directory.")]


@keys_app.command("ceremony")
def ceremony(
    hospitals: Annotated[str, typer.Option("--hospitals", help="A count (3) or comma-separated hospital names.")],
    state_dir: StateDir = Path(".carefed"),
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
    state_dir: StateDir = Path(".carefed"),
    insecure: Annotated[bool, typer.Option(help="Plain HTTP (local experiments only).")] = False,
) -> None:
    """Start the consortium's SuperLink (TLS with the consortium CA) and keep it running until Ctrl-C."""
    import time

    from consortium.runtime import FlowerRuntime
    from consortium.tls import ensure_superlink_tls

    tls = None if insecure else ensure_superlink_tls(state_dir.resolve() / "consortium" / "tls")
    with FlowerRuntime(state_dir.resolve() / "flwr", tls=tls) as runtime:
        address = runtime.start_superlink()
        typer.echo(f"SuperLink on {address}" + ("" if tls is None else f"; hospitals need CA {tls.ca_cert}"))
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            typer.echo("stopping")


def demo(
    hospitals: Annotated[str, typer.Option("--hospitals", help="A count or comma-separated names.")] = "3",
    rounds: Annotated[int, typer.Option("--rounds", min=2, help="Training rounds (≥ 2).")] = 3,
    state_dir: StateDir = Path(".carefed"),
    out: Annotated[Path, typer.Option("--out", help="Where runs/<run-id>/ goes.")] = Path("runs"),
    backend: Annotated[str, typer.Option("--backend", help="Ledger backend: embedded or fabric.")] = "embedded",
) -> None:
    """Run the federated demo: DP at each hospital, HE aggregation, the ledger — end to end on this machine."""
    from consortium.demo import run_demo

    if backend not in ("embedded", "fabric"):
        raise typer.BadParameter("must be 'embedded' or 'fabric'", param_hint="--backend")
    run_demo(hospitals=hospitals, rounds=rounds, state_dir=state_dir, out=out, backend=backend)
