"""Schemas shared by every route: pagination and RFC 9457 problem details."""

from typing import Generic, TypeVar

from pydantic import BaseModel, Field

ItemT = TypeVar("ItemT")


class Page(BaseModel, Generic[ItemT]):
    """One page of a list: the items, where they start and how many there are in all."""

    items: list[ItemT]
    total: int = Field(description="Number of items matching the query, over all pages.")
    offset: int
    limit: int


class FieldError(BaseModel):
    """One problem with one input field."""

    field: str = Field(description="Dotted path of the field, e.g. `features.radius_mean`.")
    location: str = Field(description="Where the field was sent: body, query, path, header or cookie.")
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem detail (`application/problem+json`)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldError] = Field(default_factory=list)
