"""The role-by-endpoint matrix: which roles may call which route, in one table.

Every route of the app is named here (route names are also the OpenAPI operation ids). A route missing from
the table is refused to everyone, and `tests/api/test_access_matrix.py` calls every route as every role and
as nobody and checks the answer against this table, so the table is what the service enforces.
Object-level rules (a hospital's IT sees only its own hospital's consents and nodes) live in the routes.
"""

from dataclasses import dataclass

from api.models.user import Role

HOSPITAL_IT = frozenset({Role.hospital_it})
CLINICIAN = frozenset({Role.clinician})
COMPLIANCE = frozenset({Role.compliance_officer})
ADMIN = frozenset({Role.consortium_admin})
RESEARCHER = frozenset({Role.researcher})
EVERY_ROLE = frozenset(Role)


@dataclass(frozen=True)
class Access:
    """Who may call a route: nobody needs to sign in for a public one, else one of `roles`."""

    roles: frozenset[Role]
    public: bool = False


PUBLIC = Access(roles=EVERY_ROLE, public=True)


def allow(*role_sets: frozenset[Role]) -> Access:
    """Signed-in users holding one of the roles in the given sets."""
    return Access(roles=frozenset().union(*role_sets))


ACCESS_MATRIX: dict[str, Access] = {
    # service documents and sign-in
    "openapi": PUBLIC,
    "swagger_ui_html": PUBLIC,
    "swagger_ui_redirect": PUBLIC,
    "redoc_html": PUBLIC,
    "static": PUBLIC,
    "health": PUBLIC,
    "metrics": allow(ADMIN),  # the operator's monitoring (a scraper signs in as a consortium admin)
    "login_access_token": PUBLIC,
    # users
    "read_current_user": allow(EVERY_ROLE),
    "list_users": allow(ADMIN),
    "create_user": allow(ADMIN),
    # hospital nodes
    "list_nodes": allow(HOSPITAL_IT, ADMIN),
    "register_node": allow(HOSPITAL_IT, ADMIN),
    "read_node": allow(HOSPITAL_IT, ADMIN),
    "report_node_heartbeat": allow(HOSPITAL_IT),
    # consents (FHIR R4 Consent), one hospital's patients only
    "create_consent": allow(HOSPITAL_IT),
    "list_consents": allow(HOSPITAL_IT),
    "search_patient_consents": allow(HOSPITAL_IT),
    "read_consent": allow(HOSPITAL_IT),
    "withdraw_consent": allow(HOSPITAL_IT),
    # diagnostic models
    "list_models": allow(CLINICIAN, COMPLIANCE, ADMIN),
    "read_model": allow(CLINICIAN, COMPLIANCE, ADMIN),
    "predict": allow(CLINICIAN),
    # federated cohort queries (noisy consortium-wide statistics only)
    "list_cohorts": allow(RESEARCHER, ADMIN),
    "submit_query": allow(RESEARCHER),
    "list_queries": allow(RESEARCHER, COMPLIANCE, ADMIN),
    "read_query": allow(RESEARCHER, COMPLIANCE, ADMIN),
    # audit trail
    "query_audit_events": allow(COMPLIANCE),
    # web pages
    "page_home": PUBLIC,
    "page_sign_in": PUBLIC,
    "page_sign_in_submit": PUBLIC,
    "page_sign_out": PUBLIC,
    "page_predict": allow(CLINICIAN),
    "page_predict_submit": allow(CLINICIAN),
    "page_audit": allow(COMPLIANCE),
    "page_queries": allow(RESEARCHER),
    "page_query_submit": allow(RESEARCHER),
    "picture_audit_activity": allow(COMPLIANCE),
    "picture_budgets": allow(HOSPITAL_IT, COMPLIANCE),
    "picture_lineage": allow(CLINICIAN, COMPLIANCE),
    "page_hospital": allow(HOSPITAL_IT),
    "page_consent_create": allow(HOSPITAL_IT),
    "page_consent_search": allow(HOSPITAL_IT),
    "page_consent_withdraw": allow(HOSPITAL_IT),
}
