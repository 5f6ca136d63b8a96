"""`carefed ledger …` and `carefed fabric …`: the consortium ledger and the native Fabric network."""

import typer

ledger_app = typer.Typer(help="Consortium ledger: identities, status, verification, history.", no_args_is_help=True)
fabric_app = typer.Typer(help="A native Hyperledger Fabric network for the consortium.", no_args_is_help=True)
