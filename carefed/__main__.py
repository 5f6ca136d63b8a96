"""`python -m carefed` runs the same command as the `carefed` console script."""

from carefed.cli import app

app()
