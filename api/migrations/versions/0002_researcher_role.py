"""The researcher role (federated cohort queries).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # PostgreSQL keeps the role enum as a type of its own; SQLite stores the name in a plain VARCHAR column.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TYPE role ADD VALUE IF NOT EXISTS 'researcher'")


def downgrade() -> None:
    """PostgreSQL cannot drop an enum value; researchers must be removed or re-roled by hand first."""
