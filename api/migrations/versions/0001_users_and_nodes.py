"""Users (roles bound to hospitals) and hospital nodes.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLE = sa.Enum("hospital_it", "clinician", "compliance_officer", "consortium_admin", name="role")
NODE_STATE = sa.Enum("registered", "idle", "training", "failed", "stopped", name="nodestate")


def upgrade() -> None:
    op.create_table(
        "user",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("role", ROLE, nullable=False),
        sa.Column("hospital", sa.String(length=63), nullable=True),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_user_username", "user", ["username"], unique=True)
    op.create_table(
        "node",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("hospital", sa.String(length=63), nullable=False),
        sa.Column("state", NODE_STATE, nullable=False),
        sa.Column("software_version", sa.String(length=64), nullable=True),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("hospital", "name"),
    )
    op.create_index("ix_node_hospital", "node", ["hospital"])


def downgrade() -> None:
    op.drop_index("ix_node_hospital", table_name="node")
    op.drop_table("node")
    op.drop_index("ix_user_username", table_name="user")
    op.drop_table("user")
    NODE_STATE.drop(op.get_bind(), checkfirst=True)
    ROLE.drop(op.get_bind(), checkfirst=True)
