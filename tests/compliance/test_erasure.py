"""`carefed node forget` (MRN on stdin): the hospital forgets the MRN; the ledger records the erasure by pseudonym."""

from __future__ import annotations

from typer.testing import CliRunner

from carefed.cli import app
from compliance.scanner import KnownIdentifiers, scan
from hospital_node.pseudonyms import PseudonymTable
from tests.compliance.scenario import MRNS, RUN_ID, Scenario

runner = CliRunner()


def _access(scenario: Scenario, mrn: str) -> tuple[int, str]:
    """The access request's two steps: the hospital maps the MRN to its pseudonym, the report reads the ledger."""
    state = ["--state-dir", str(scenario.state_dir)]
    lookup = runner.invoke(app, ["node", "pseudonym", "--hospital", "hospital-a", *state], input=mrn + "\n")
    if lookup.exit_code != 0:
        return lookup.exit_code, lookup.output
    result = runner.invoke(app, ["report", "access", "-", "--format", "json", *state], input=lookup.output)
    return result.exit_code, result.output


def test_forget_unlinks_the_mrn_and_records_the_erasure_without_it(
    node_scenario: tuple[Scenario, PseudonymTable],
) -> None:
    scenario, table = node_scenario
    withdrawn_mrn = MRNS[1]  # the patient who withdrew after round 1
    pseudonym = table.lookup(withdrawn_mrn)
    assert pseudonym == scenario.withdrawn
    code, output = _access(scenario, withdrawn_mrn)
    assert code == 0 and f'"run_id": "{RUN_ID}"' in output and '"round": 2' not in output.split('"model_versions"')[0]

    result = runner.invoke(
        app, ["node", "forget", "--hospital", "hospital-a", "--state-dir", str(scenario.state_dir)], input=withdrawn_mrn
    )
    assert result.exit_code == 0, result.output
    assert withdrawn_mrn not in result.output

    assert table.lookup(withdrawn_mrn) is None
    code, output = _access(scenario, withdrawn_mrn)
    assert code == 1 and "has no pseudonym for this patient" in output and withdrawn_mrn not in output
    with scenario.ledger() as ledger:
        erasure = ledger.evaluate("ConsentContract:read_erasure", pseudonym)
        assert erasure["hospital"] == "HospitalAMSP" and erasure["withdrawn_purposes"] == ["HRESCH"]
    # Crypto-shredding: the MRN's bytes are gone from the node's table file, and never were on the ledger.
    table.close()
    assert scan([scenario.state_dir], KnownIdentifiers(mrns=[withdrawn_mrn])) == []
    assert len(scan([scenario.state_dir], KnownIdentifiers(mrns=MRNS))) >= 3  # the others are still in the table


def test_forgetting_twice_or_an_unknown_mrn_is_a_named_error(node_scenario: tuple[Scenario, PseudonymTable]) -> None:
    scenario, table = node_scenario
    args = ["--hospital", "hospital-a", "--state-dir", str(scenario.state_dir)]
    assert runner.invoke(app, ["node", "forget", *args], input=MRNS[0]).exit_code == 0
    again = runner.invoke(app, ["node", "forget", *args], input=MRNS[0])
    assert again.exit_code == 1 and "has no pseudonym for this patient" in again.output
    assert table.lookup(MRNS[2]) is not None  # the others are untouched
    wrong = runner.invoke(
        app, ["node", "forget", "--hospital", "hospital-z", "--state-dir", str(scenario.state_dir)], input=MRNS[2]
    )
    assert wrong.exit_code == 1 and "--hospital hospital-z" in wrong.output and "carefed node init" in wrong.output
    assert table.lookup(MRNS[2]) is not None
