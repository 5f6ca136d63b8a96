"""A small consortium history written through the real `Ledger` interface and contracts (embedded backend).

Two hospitals, seven consenting patients, one run of two rounds, one patient (``withdrawn``) withdrawing
between the rounds, budgets charged, a model registered, and the API-style audit events a deployment records
(login, a patient read, a prediction served, a model export).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from fabric_network.identities import init_identities
from fabric_network.ledger import Ledger, open_ledger
from federation.layout import node_dir_for
from hospital_node.config import NodeConfig
from hospital_node.pseudonyms import PseudonymTable
from tests.contracts.conftest import start_run, vouch

PURPOSE = "HRESCH"
RUN_ID = "run-demo-1"
MODEL_ID = "breast-cancer-v2"
HOSPITALS = {"hospital-a": "HospitalAMSP", "hospital-b": "HospitalBMSP"}
MRNS = ["A100231", "A100232", "A100233", "A100234"]  # hospital-a's patients when a real node table is used


def digest(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


@dataclass
class Scenario:
    state_dir: Path
    patients: dict[str, list[str]] = field(default_factory=dict)  # hospital name -> pseudonyms
    withdrawn: str = ""  # hospital-a's patient who withdrew after round 1
    run_id: str = RUN_ID
    model_id: str = MODEL_ID

    def ledger(self, org: str = "consortium", role: str = "admin") -> Ledger:
        return open_ledger(state_dir=self.state_dir, org=org, role=role)


def _round(consortium: Ledger, hospitals: dict[str, Ledger], number: int) -> None:
    participants = []
    for name, ledger in hospitals.items():
        snapshot = ledger.submit("ConsentContract:create_consent_snapshot", f"snap-{name}-{number}", PURPOSE, "").result
        participants.append(vouch(ledger, RUN_ID, number, snapshot, digest(f"update {name} {number}"), PURPOSE, 1.0))
    consortium.submit(
        "LineageContract:record_round",
        RUN_ID,
        {"round": number, "participants": participants, "model_sha256": digest(f"model {number}")},
    )


def build_scenario(state_dir: Path, hospital_a_patients: list[str] | None = None) -> Scenario:
    """The scenario; `hospital_a_patients` replaces hospital-a's four made-up pseudonyms (e.g. by pseudonyms
    drawn by a real node's pseudonym table)."""
    init_identities(state_dir, list(HOSPITALS))
    scenario = Scenario(state_dir)
    with (
        scenario.ledger() as consortium,
        scenario.ledger("hospital-a", "client") as hospital_a,
        scenario.ledger("hospital-b", "client") as hospital_b,
    ):
        hospitals = {"hospital-a": hospital_a, "hospital-b": hospital_b}
        for name, ledger in hospitals.items():
            consortium.submit("PrivacyBudgetContract:set_budget_limit", HOSPITALS[name], PURPOSE, "10")
            made_up = [digest(f"{name} patient {i}") for i in range(4 if name == "hospital-a" else 3)]
            scenario.patients[name] = (hospital_a_patients if name == "hospital-a" else None) or made_up
            for pseudonym in scenario.patients[name]:
                ledger.submit(
                    "ConsentContract:record_consent", pseudonym, PURPOSE, "research", "2020-01-01T00:00:00Z", ""
                )
        consortium.submit("GovernanceContract:init_members", list(HOSPITALS.values()))
        start_run(
            consortium,
            RUN_ID,
            {
                "purpose": PURPOSE,
                "hospitals": list(HOSPITALS.values()),
                "dp": {"epsilon": 3.0, "delta": 1e-5, "accountant": "rdp", "noise_multiplier": 1.1},
                "he": {"scheme": "ckks", "poly_modulus_degree": 8192, "coeff_mod_bit_sizes": [40, 40]},
                "code_version": "0.1.0",
                "rounds": 2,
            },
            {hospital_a: "approve", hospital_b: "approve"},
        )
        hospital_a.submit(
            "AuditContract:append_audit_events",
            [
                {
                    "actor": "it-admin-a",
                    "role": "hospital_it",
                    "action": "user.login",
                    "object": "session:s1",
                    "outcome": "success",
                    "purpose": "",
                },
                {
                    "actor": "clinician-a",
                    "role": "clinician",
                    "action": "patient.read",
                    "object": f"patient:{scenario.patients['hospital-a'][0]}",
                    "outcome": "success",
                    "purpose": "TREAT",
                },
            ],
        )
        _round(consortium, hospitals, 1)
        scenario.withdrawn = scenario.patients["hospital-a"][1]
        hospital_a.submit("ConsentContract:withdraw_consent", scenario.withdrawn, PURPOSE)
        _round(consortium, hospitals, 2)
        consortium.submit(
            "LineageContract:register_model",
            MODEL_ID,
            {"run_id": RUN_ID, "round": 2, "sha256": digest("model 2"), "name": "breast-cancer", "version": "2"},
        )
        consortium.submit(
            "AuditContract:append_audit_events",
            [
                {
                    "actor": "clinician-b",
                    "role": "clinician",
                    "action": "model.predict",
                    "object": f"model:{MODEL_ID}",
                    "outcome": "success",
                    "purpose": "TREAT",
                },
                {
                    "actor": "partner-lab",
                    "role": "researcher",
                    "action": "model.export",
                    "object": f"model:{MODEL_ID}",
                    "outcome": "success",
                    "purpose": "HRESCH",
                },
                {
                    "actor": "clinician-b",
                    "role": "clinician",
                    "action": "user.logout",
                    "object": "session:s2",
                    "outcome": "success",
                    "purpose": "",
                },
            ],
        )
    return scenario


def make_node_scenario(directory: Path) -> tuple[Scenario, PseudonymTable]:
    """The scenario with hospital-a's patients pseudonymised by a real node's pseudonym table."""
    state_dir = directory / "state"
    config = NodeConfig(
        hospital="hospital-a",
        node_dir=node_dir_for(state_dir, "hospital-a"),
        data=directory / "data.csv",
        schema_path=directory / "schema.toml",
        ledger_state_dir=state_dir,
    )
    config.save()
    table = PseudonymTable(config.pseudonym_table)
    pseudonyms = table.assign(MRNS)
    return build_scenario(state_dir, [pseudonyms[m] for m in MRNS]), table
