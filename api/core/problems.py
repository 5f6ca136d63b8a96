"""RFC 9457 problem details for every error the API returns, each naming the field at fault.

Validation errors from FastAPI/pydantic, the service's own `ProblemError`s and plain HTTP errors all leave
as `application/problem+json` with the same shape (`api.models.common.Problem`); an unexpected exception
becomes a 500 problem that reveals nothing of the request (it might hold a patient's features).
"""

import logging
import traceback
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.models.common import FieldError, Problem
from fabric_network.ledger import ContractRejected

PROBLEM_MEDIA_TYPE = "application/problem+json"
LOCATIONS = {"body", "query", "path", "header", "cookie"}
logger = logging.getLogger(__name__)


class ProblemError(Exception):
    """An error the service raises on purpose: a status, a human detail and, when one is at fault, the field."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        field: str | None = None,
        location: str = "body",
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors or ([FieldError(field=field, location=location, message=detail)] if field else [])
        self.headers = headers

    @classmethod
    def invalid(cls, errors: list[FieldError]) -> "ProblemError":
        """A 422 listing every field at fault (the detail sums them up)."""
        return cls(422, summarize(errors), errors=errors)


def field_errors(raw_errors: Sequence[Any], *, location: str = "body", prefix: str = "") -> list[FieldError]:
    """pydantic's error list as field errors with dotted paths (`features.radius_mean`)."""
    errors = []
    for error in raw_errors:
        loc = [str(part) for part in error.get("loc", ())]
        where = location
        if loc and loc[0] in LOCATIONS:
            where, loc = loc[0], loc[1:]
        path = ".".join(part for part in [prefix, *loc] if part) or "(root)"
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        errors.append(FieldError(field=path, location=where, message=message))
    return errors


def problem_response(
    request: Request,
    status: int,
    detail: str,
    errors: list[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    problem = Problem(
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=request.url.path,
        errors=errors or [],
    )
    return JSONResponse(
        problem.model_dump(mode="json"), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers
    )


def contract_problem(error: ContractRejected) -> ProblemError:
    """A contract refusal as a problem naming the field (the message reads `<function>: <field>: <rule>`)."""
    _function, _, message = str(error).partition(": ")
    field, _, reason = message.partition(": ")
    status = 409 if "exists" in reason or "already" in reason else 422
    return ProblemError(status, message or str(error), field=field if reason else None)


def summarize(errors: list[FieldError]) -> str:
    """One line naming every field at fault and why."""
    return "; ".join(f"{error.field}: {error.message}" for error in errors)


PageRenderer = Callable[[Request, int, str, list[FieldError]], Response | None]


def install_problem_handlers(app: FastAPI, access_check: Callable[[Request], None], render_page: PageRenderer) -> None:
    """Route every error through one renderer: problem+json for the API, an HTML page for the web pages.

    `access_check` runs before a validation error is reported: FastAPI rejects an unparsable body before any
    dependency runs, and the access matrix must still come first, so that nobody learns anything about a
    route they may not call. `render_page` returns None for requests that are not for a web page.
    """

    def respond(
        request: Request, status: int, detail: str, errors: list[FieldError], headers: Mapping[str, str] | None = None
    ) -> Response:
        page = render_page(request, status, detail, errors)
        return page if page is not None else problem_response(request, status, detail, errors, headers)

    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProblemError)
        return respond(request, exc.status, exc.detail, exc.errors, exc.headers)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        try:
            await run_in_threadpool(access_check, request)
        except ProblemError as refusal:
            return await on_problem(request, refusal)
        assert isinstance(exc, RequestValidationError)
        errors = field_errors(exc.errors())
        return respond(request, 422, summarize(errors), errors)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return respond(request, exc.status_code, str(exc.detail), [], exc.headers)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        # The exception's type and frames only: its message, like the request, could carry patient data.
        route = request.scope.get("route")
        logger.error(
            "unhandled %s in route %s\n%s",
            type(exc).__name__,
            getattr(route, "name", "?"),
            "".join(traceback.format_tb(exc.__traceback__)),
        )
        return respond(request, 500, "The service failed on this request; it has been logged.", [])

    async def on_contract_refusal(request: Request, exc: Exception) -> Response:
        # A refusal the route did not expect still names the contract's field rather than failing as a 500.
        assert isinstance(exc, ContractRejected)
        problem = contract_problem(exc)
        return respond(request, problem.status, problem.detail, problem.errors)

    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(ContractRejected, on_contract_refusal)
    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}}, "description": HTTPStatus(status).phrase}
    for status in (401, 403, 404, 422)
}
