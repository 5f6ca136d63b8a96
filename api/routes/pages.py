"""Server-rendered web pages: sign-in, the clinician's prediction page, the compliance officer's audit browser,
and hospital IT's nodes and consents.

Pages call the very functions behind the JSON API, so a page can do nothing the API would refuse and is
audited like it. They sign in with an HttpOnly, SameSite=Strict session cookie holding the same JWT the API
uses (Strict keeps the cookie off every cross-site request, which is what stops cross-site form posts).
Forms follow post/redirect/get; a redirect never carries an MRN.
"""

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from api.core.config import Settings
from api.core.ledger import LedgerHub
from api.core.problems import ProblemError
from api.core.queries import launch_query, published_cohorts
from api.deps import (
    PAGE_TAG,
    SESSION_COOKIE,
    CatalogDep,
    CurrentUser,
    LedgerHubDep,
    OptionalUser,
    PageDep,
    PageParams,
    SessionDep,
    SettingsDep,
    is_page,
    purpose_of_use,
)
from api.models.common import FieldError
from api.models.consent import ACT_CODE_SYSTEM, ACT_REASON_SYSTEM, CONSENT_SCOPE_SYSTEM, LOINC_PRIVACY_POLICY
from api.models.query import QueryCreate
from api.models.user import Actor, Role, User
from api.routes.audit import (
    ACTION_PATTERN,
    ACTOR_PATTERN,
    OBJECT_PATTERN,
    AuditFilters,
    audit_filters,
    query_events,
)
from api.routes.consents import (
    PURPOSE_PATTERN,
    PseudonymPath,
    PurposePath,
    active_consents,
    hospital_of,
    patient_consents,
    record_consent,
    withdraw,
)
from api.routes.login import authenticate, issue_token
from api.routes.models import MODEL_ID_PATTERN, predict_for
from api.routes.nodes import node_public, rounds_by_hospital, visible_nodes
from api.routes.queries import list_queries, query_status
from carefed.options import QueryKind
from fabric_network.contracts.audit import OUTCOMES
from fabric_network.contracts.common import CONSENT_SCOPES, PURPOSE_CODES
from federation.analytics import result_rows

router = APIRouter(tags=[PAGE_TAG], include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).resolve().parent.parent / "templates")

HOME_OF_ROLE = {
    Role.clinician: "/ui/predict",
    Role.compliance_officer: "/ui/audit",
    Role.hospital_it: "/ui/hospital",
    Role.consortium_admin: "/docs",
    Role.researcher: "/ui/queries",
}
NOTICES = {"recorded": "Consent recorded on the ledger.", "withdrawn": "Consent withdrawn on the ledger."}


def render(request: Request, template: str, status: int = 200, **context: Any) -> Response:
    user = getattr(request.state, "user", None)
    return templates.TemplateResponse(request, template, {"user": user, **context}, status_code=status)


def render_problem(request: Request, status: int, detail: str, errors: list[FieldError]) -> Response | None:
    """Errors on web pages as pages: the sign-in form when signed out, else an error page naming the fields."""
    if not is_page(request):
        return None
    if status == 401:
        return render(request, "sign_in.html", status=401, next=request.url.path, error=None)
    return render(request, "error.html", status=status, status_code=status, detail=detail, errors=errors)


def _safe_next(target: str | None, user: User) -> str:
    """Where to go after sign-in: a local path only (no open redirect), else the user's home page."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return HOME_OF_ROLE[user.role]


@router.get("/", name="page_home")
def page_home(user: OptionalUser) -> RedirectResponse:
    return RedirectResponse(HOME_OF_ROLE[user.role] if user else "/sign-in", status_code=303)


@router.get("/sign-in", name="page_sign_in")
def page_sign_in(request: Request, next: Annotated[str | None, Query(max_length=200)] = None) -> Response:
    return render(request, "sign_in.html", next=next, error=None)


@router.post("/sign-in", name="page_sign_in_submit")
def page_sign_in_submit(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=256)],
    next: Annotated[str | None, Form(max_length=200)] = None,
) -> Response:
    user = authenticate(session, username, password)
    if user is None:
        return render(request, "sign_in.html", status=401, next=next, error="Wrong user name or password.")
    request.state.user = Actor.of(user)
    token = issue_token(user, settings)
    response = RedirectResponse(_safe_next(next, user), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token.access_token,
        max_age=token.expires_in,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/sign-out", name="page_sign_out")
def page_sign_out() -> RedirectResponse:
    response = RedirectResponse("/sign-in", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


# --- clinician: predict ----------------------------------------------------------------------------------------


def _predict_page(
    request: Request, catalog: CatalogDep, model_id: str | None, status: int = 200, **context: Any
) -> Response:
    model_ids = catalog.model_ids()
    chosen = model_id or (model_ids[-1] if model_ids else None)
    card = catalog.card(chosen)[0] if chosen else None
    return render(request, "predict.html", status=status, model_ids=model_ids, card=card, **context)


@router.get("/ui/predict", name="page_predict")
def page_predict(
    request: Request,
    user: CurrentUser,
    catalog: CatalogDep,
    model_id: Annotated[str | None, Query(max_length=128, pattern=MODEL_ID_PATTERN)] = None,
) -> Response:
    return _predict_page(request, catalog, model_id, values={}, errors={}, prediction=None)


@router.post("/ui/predict", name="page_predict_submit", dependencies=[Depends(purpose_of_use("TREAT"))])
async def page_predict_submit(request: Request, user: CurrentUser, catalog: CatalogDep) -> Response:
    form = await request.form()
    model_id = str(form.get("model_id", ""))
    values = {key.removeprefix("feature."): str(value) for key, value in form.items() if key.startswith("feature.")}
    features: dict[str, float] = {}
    errors: dict[str, str] = {}
    for name, text in values.items():
        try:
            features[name] = float(text)
        except ValueError:
            errors[name] = "enter a number"
    prediction = None
    if not errors:
        try:
            prediction = await run_in_threadpool(predict_for, request, catalog, model_id, features)
        except ProblemError as problem:
            if problem.status != 422:
                raise
            errors = {e.field.removeprefix("features."): e.message for e in problem.errors}
    status = 422 if errors else 200
    return await run_in_threadpool(
        _predict_page, request, catalog, model_id, status, values=values, errors=errors, prediction=prediction
    )


# --- compliance: audit trail -----------------------------------------------------------------------------------


def _form_time(name: str, text: str | None) -> dt.datetime | None:
    """A datetime-local form value (no zone: the page states its times are UTC) or a full ISO 8601 time."""
    if not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ProblemError(
            422, "must be a date and time, e.g. 2026-01-31T08:00", field=name, location="query"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def page_audit_filters(
    actor: str | None = None,
    action: str | None = None,
    object: str | None = None,
    outcome: str | None = None,
    since: str | None = None,
    until: str | None = None,
    refused_only: bool = False,
) -> AuditFilters:
    """The audit page's filter form: empty fields mean no filter; then the API's own checks apply."""
    filters = AuditFilters(
        actor=actor or None,
        action=action or None,
        object=object or None,
        outcome=outcome or None,
        since=_form_time("since", since),
        until=_form_time("until", until),
        refused_only=refused_only,
    )
    problems = [
        FieldError(field=name, location="query", message=f"must match {pattern}")
        for name, pattern in (("actor", ACTOR_PATTERN), ("action", ACTION_PATTERN), ("object", OBJECT_PATTERN))
        if (value := getattr(filters, name)) is not None and not re.fullmatch(pattern, value)
    ]
    if filters.outcome is not None and filters.outcome not in OUTCOMES:
        problems.append(FieldError(field="outcome", location="query", message=f"one of {', '.join(OUTCOMES)}"))
    if problems:
        raise ProblemError.invalid(problems)
    return audit_filters(**filters.model_dump())


@router.get("/ui/audit", name="page_audit", dependencies=[Depends(purpose_of_use("HCOMPL"))])
def page_audit(
    request: Request,
    session: SessionDep,
    hub: LedgerHubDep,
    page: PageDep,
    filters: Annotated[AuditFilters, Depends(page_audit_filters)],
) -> Response:
    events, truncated = query_events(session, hub, filters)
    query = {k: v for k, v in request.query_params.items() if k not in {"offset", "limit"}}
    newer = urlencode({**query, "offset": max(page.offset - page.limit, 0), "limit": page.limit})
    older = urlencode({**query, "offset": page.offset + page.limit, "limit": page.limit})
    return render(
        request,
        "audit.html",
        events=events[page.offset : page.offset + page.limit],
        total=len(events),
        truncated=truncated,
        page=page,
        filters=filters,
        newer=newer if page.offset > 0 else None,
        older=older if page.offset + page.limit < len(events) else None,
    )


# --- hospital IT: nodes and consents ---------------------------------------------------------------------------


@dataclass(frozen=True)
class HospitalDesk:
    """What every hospital-IT page handler works with."""

    request: Request
    session: Session
    settings: Settings
    hub: LedgerHub
    user: User
    page: PageParams


def hospital_desk(
    request: Request, session: SessionDep, settings: SettingsDep, hub: LedgerHubDep, user: CurrentUser, page: PageDep
) -> HospitalDesk:
    return HospitalDesk(request, session, settings, hub, user, page)


HospitalDeskDep = Annotated[HospitalDesk, Depends(hospital_desk)]


def _hospital_page(desk: HospitalDesk, purpose: str, status: int = 200, **context: Any) -> Response:
    request, session, hub, user, page = desk.request, desk.session, desk.hub, desk.user, desk.page
    hospital = hospital_of(user)
    nodes = visible_nodes(session, user, offset=0, limit=100)
    rounds = rounds_by_hospital(hub) if nodes else {}
    context.setdefault("form", {})
    context.setdefault("form_errors", {})
    context.setdefault("search_results", None)
    return render(
        request,
        "hospital.html",
        status=status,
        hospital=hospital,
        nodes=[node_public(node, rounds) for node in nodes],
        consents=active_consents(hub, hospital, purpose, page),
        purpose=purpose,
        purposes=PURPOSE_CODES,
        scopes=CONSENT_SCOPES,
        notice=NOTICES.get(request.query_params.get("notice", "")),
        today=dt.date.today().isoformat(),
        **context,
    )


PurposeQuery = Annotated[str, Query(pattern=PURPOSE_PATTERN)]


@router.get("/ui/hospital", name="page_hospital", dependencies=[Depends(purpose_of_use("HOPERAT"))])
def page_hospital(desk: HospitalDeskDep, purpose: PurposeQuery = "HRESCH") -> Response:
    return _hospital_page(desk, purpose)


def consent_from_form(form: dict[str, str]) -> dict[str, Any]:
    """The FHIR R4 Consent a hospital-IT form describes (validated like any API request)."""
    period = {"start": form["start"]} if form.get("start") else {}
    if form.get("end"):
        period["end"] = form["end"]
    return {
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": CONSENT_SCOPE_SYSTEM, "code": form.get("scope", "")}]},
        "category": [{"coding": [LOINC_PRIVACY_POLICY]}],
        "patient": {"identifier": {"value": form.get("mrn", "")}},
        "policyRule": {"coding": [{"system": ACT_CODE_SYSTEM, "code": "OPTIN"}]},
        "provision": {
            "type": "permit",
            **({"period": period} if period else {}),
            "purpose": [{"system": ACT_REASON_SYSTEM, "code": form.get("purpose", "")}],
        },
    }


FORM_FIELD_OF = {
    "patient.identifier.value": "mrn",
    "provision.purpose": "purpose",
    "scope": "scope",
    "provision.period.start": "start",
    "provision.period.end": "end",
}


@router.post("/ui/hospital/consents", name="page_consent_create", dependencies=[Depends(purpose_of_use("HOPERAT"))])
def page_consent_create(
    desk: HospitalDeskDep,
    mrn: Annotated[str, Form(max_length=64)],
    purpose: Annotated[str, Form(max_length=16)],
    scope: Annotated[str, Form(max_length=32)],
    start: Annotated[str, Form(max_length=40)] = "",
    end: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    form = {"mrn": mrn, "purpose": purpose, "scope": scope, "start": start, "end": end}
    try:
        record_consent(desk.request, desk.settings, desk.hub, desk.user, consent_from_form(form))
    except ProblemError as problem:
        if problem.status not in (409, 422):
            raise
        form_errors = {FORM_FIELD_OF.get(e.field, e.field): e.message for e in problem.errors} or {
            "form": problem.detail
        }
        form.pop("mrn")  # the MRN is not echoed back into the page
        return _hospital_page(desk, "HRESCH", 422, form=form, form_errors=form_errors)
    return RedirectResponse("/ui/hospital?notice=recorded", status_code=303)


@router.post("/ui/hospital/search", name="page_consent_search", dependencies=[Depends(purpose_of_use("HOPERAT"))])
def page_consent_search(desk: HospitalDeskDep, mrn: Annotated[str, Form(min_length=1, max_length=64)]) -> Response:
    results = patient_consents(desk.request, desk.settings, desk.hub, hospital_of(desk.user), mrn)
    return _hospital_page(desk, "HRESCH", search_results=results)


@router.post(
    "/ui/hospital/consents/{pseudonym}/{purpose}/withdraw",
    name="page_consent_withdraw",
    dependencies=[Depends(purpose_of_use("HOPERAT"))],
)
def page_consent_withdraw(
    request: Request,
    hub: LedgerHubDep,
    user: CurrentUser,
    pseudonym: PseudonymPath,
    purpose: PurposePath,
) -> Response:
    withdraw(request, hub, user, pseudonym, purpose)
    return RedirectResponse("/ui/hospital?notice=withdrawn", status_code=303)


# --- researchers: federated cohort queries ---------------------------------------------------------------------


def _queries_page(
    request: Request, hub: LedgerHub, settings: Settings, query_id: str | None, status: int = 200, **context: Any
) -> Response:
    chosen = query_status(hub, settings.state_dir, query_id) if query_id else None
    return render(
        request,
        "queries.html",
        status=status,
        kinds=[kind.value for kind in QueryKind],
        cohorts=published_cohorts(settings.state_dir),
        queries=list(reversed(list_queries(hub))),
        chosen=chosen,
        rows=result_rows(chosen.result) if chosen and chosen.result else [],
        **context,
    )


@router.get("/ui/queries", name="page_queries", dependencies=[Depends(purpose_of_use("HRESCH"))])
def page_queries(
    request: Request,
    settings: SettingsDep,
    hub: LedgerHubDep,
    user: CurrentUser,
    query_id: Annotated[str | None, Query(pattern=r"^query-[0-9a-f]{32}$")] = None,
) -> Response:
    return _queries_page(request, hub, settings, query_id, form={}, error=None)


@router.post("/ui/queries", name="page_query_submit", dependencies=[Depends(purpose_of_use("HRESCH"))])
async def page_query_submit(request: Request, settings: SettingsDep, hub: LedgerHubDep, user: CurrentUser) -> Response:
    form = {key: str(value) for key, value in (await request.form()).items()}
    try:
        body = QueryCreate.model_validate(form)
        query_id = await run_in_threadpool(launch_query, settings.state_dir, body, f"user-{user.id}")
    except ValidationError as exc:
        error = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return await run_in_threadpool(_queries_page, request, hub, settings, None, 422, form=form, error=error)
    except ProblemError as problem:
        return await run_in_threadpool(
            _queries_page, request, hub, settings, None, problem.status, form=form, error=problem.detail
        )
    request.state.audit_object = f"query:{query_id}"
    return RedirectResponse(f"/ui/queries?query_id={query_id}", status_code=303)
