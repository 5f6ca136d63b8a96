"""`carefed audit …` and `carefed report …`: the compliance officer's commands."""

import typer

audit_app = typer.Typer(help="Export and verify the audit trail.", no_args_is_help=True)
report_app = typer.Typer(help="Regulators' reports from the ledger.", no_args_is_help=True)
