"""`carefed api …`: start the CareFed service and manage its users."""

import typer

api_app = typer.Typer(help="The CareFed web service.", no_args_is_help=True)
