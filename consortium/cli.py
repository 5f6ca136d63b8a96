"""`carefed consortium …`, `carefed keys …` and `carefed demo`: the consortium operator's commands."""

import typer

consortium_app = typer.Typer(help="Run the consortium's SuperLink and training runs.", no_args_is_help=True)
keys_app = typer.Typer(help="CKKS key ceremony for the hospitals and the aggregator.", no_args_is_help=True)


def demo() -> None:
    """Run the federated demo on the embedded default."""
    raise typer.Exit(code=1)
