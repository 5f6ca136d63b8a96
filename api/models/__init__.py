"""SQLModel tables and the request/response schemas of the API.

Importing this package registers every table on `SQLModel.metadata`, which Alembic's autogenerate and the
migration check compare against.
"""

from api.models.node import Node
from api.models.user import User

__all__ = ["Node", "User"]
