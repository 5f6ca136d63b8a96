"""The roles of the service's users, apart from the database models so the CLI can offer them as choices
without importing SQLModel (`carefed --help` stays fast)."""

from enum import StrEnum


class Role(StrEnum):
    """What a user does in the consortium; `api.core.access.ACCESS_MATRIX` says which endpoints each may call."""

    hospital_it = "hospital_it"
    clinician = "clinician"
    compliance_officer = "compliance_officer"
    consortium_admin = "consortium_admin"
    researcher = "researcher"  # asks federated cohort queries (docs/analytics.md); sees no patient-level data

    @property
    def bound_to_hospital(self) -> bool:
        """Hospital IT and clinicians act for one hospital; compliance and administration are consortium-wide."""
        return self in {Role.hospital_it, Role.clinician}
