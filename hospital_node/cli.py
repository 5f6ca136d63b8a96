"""`carefed node …`: what hospital IT runs to set up, check and start a hospital node."""

import typer

node_app = typer.Typer(help="Set up, check and run a hospital node.", no_args_is_help=True)
