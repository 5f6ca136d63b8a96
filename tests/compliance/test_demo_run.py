"""The compliance toolkit on a real `carefed demo` run (3 hospitals, 2 rounds, real Flower processes).

One demo run serves every check, in this order: its audit exports verify; every FHIR AuditEvent passes the
BALP checks; the Art. 15 report of a patient who withdrew after round 1 shows round 1 only, and after
`carefed node forget` the MRN yields no report; and no patient identifier appears in anything the demo wrote
outside the hospitals' private stores (ledger, logs, registry, run reports, exports).
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from typer.testing import CliRunner

from carefed.cli import app
from compliance.fhir_audit import BALP, balp_problems
from compliance.scanner import KnownIdentifiers, scan
from fabric_network.ledger import open_ledger
from federation.layout import node_dir_for
from harness.demo import CAPTIONS
from hospital_node.pseudonyms import PseudonymTable

# The demo (real SuperLink, SuperNodes and node workers; an HE run and a timing run) takes 3-10 minutes on two
# shared cores; the first test pays for it in its fixture.
pytestmark = pytest.mark.timeout(1800)
runner = CliRunner()
HOSPITALS = ("hospital-a", "hospital-b", "hospital-c")  # the demo's default
PRIVATE_TO_HOSPITALS = ("nodes", "hospital-data")  # pseudonym tables and input data: MRNs by design


@dataclass(frozen=True)
class DemoRun:
    state: Path  # the demo's consortium state directory (ledger, identities, nodes, logs)
    runs: Path  # the demo's --out directory (model, report, plots)
    exports: Path
    mrns: dict[str, list[str]]  # every MRN of the demo data, per hospital (training and held-out)

    def carefed(self, *args: str, stdin: str | None = None) -> tuple[int, str]:
        result = runner.invoke(app, [*args, "--state-dir", str(self.state)], input=stdin)
        return result.exit_code, result.output


@pytest.fixture(scope="module")
def demo(demo_workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    state = demo_workspace / ".carefed"  # the demo leaves its consortium where the README's commands look
    mrns = {
        hospital: [
            row["mrn"]
            for name in ("patients.csv", "holdout.csv")
            for row in csv.DictReader((state / "hospital-data" / hospital / name).open())
        ]
        for hospital in HOSPITALS
    }
    return DemoRun(state, demo_workspace / "runs", tmp_path_factory.mktemp("exports"), mrns)


def test_the_demo_runs_exports_verify_and_are_consistent(demo: DemoRun) -> None:
    for fmt in ("csv", "jsonl", "fhir"):
        code, output = demo.carefed("audit", "export", "--format", fmt, "--out", str(demo.exports / fmt))
        assert code == 0, output
        code, output = demo.carefed("audit", "verify", str(demo.exports / fmt))
        assert code == 0, output
    code, output = demo.carefed("audit", "export", "--format", "jsonl", "--out", str(demo.exports / "jsonl-later"))
    assert code == 0, output
    code, output = demo.carefed(
        "audit", "verify", str(demo.exports / "jsonl-later"), "--previous", str(demo.exports / "jsonl")
    )
    assert code == 0 and "consistent with" in output, output


def test_the_demo_draws_every_picture_and_its_report_embeds_them(demo: DemoRun) -> None:
    """A person would rather see than read: each picture is a real image file and report.md shows it."""
    (report,) = demo.runs.glob("*/report.md")
    text = report.read_text(encoding="utf-8")
    for name, caption in {**CAPTIONS, "credit.png": "credit"}.items():
        picture = report.parent / name
        assert picture.exists(), f"{name} was not drawn"
        head = picture.read_bytes()[:200]
        assert head.startswith(b"\x89PNG") if name.endswith(".png") else b"<svg" in head or b"<?xml" in head, name
        assert f"]({name})" in text, f"report.md does not embed {name} ({caption})"


def test_the_demo_report_shows_approvals_credit_and_a_budget_that_recomputes_to_1e6(demo: DemoRun) -> None:
    (report,) = demo.runs.glob("*/report.md")
    text = report.read_text(encoding="utf-8")
    assert "Run approved on the ledger by HospitalAMSP, HospitalBMSP, HospitalCMSP (2 approvals needed)" in text
    assert all(f"| Hospital{x}MSP | 2 |" in text for x in "ABC"), "credit: every hospital, two rounds"
    assert "all agree to 1e-6" in text and (report.parent / "credit.png").exists()
    out = demo.exports / "privacy-budget.json"
    code, output = demo.carefed("report", "privacy-budget", "--recompute", "--format", "json", "--out", str(out))
    assert code == 0, output
    recomputed = json.loads(out.read_text(encoding="utf-8"))
    assert recomputed["recompute_summary"]["charges"] >= 4 and recomputed["recompute_summary"]["understated"] == 0
    assert all(abs(row["charged"] - row["recomputed"]) <= 1e-6 for row in recomputed["recomputed"])


def test_every_demo_audit_event_is_fhir_and_passes_the_balp_checks(demo: DemoRun) -> None:
    path = demo.exports / "fhir" / "events.fhir.json"
    if not path.exists():
        code, output = demo.carefed("audit", "export", "--format", "fhir", "--out", str(path.parent))
        assert code == 0, output
    events = [entry["resource"] for entry in json.loads(path.read_text())["entry"]]
    assert len(events) > 100
    for event in events:
        AuditEvent.model_validate(event)
        assert balp_problems(event) == [], event["id"]
    profiles = [p.removeprefix(BALP) for e in events for p in e.get("meta", {}).get("profile", [])]
    assert profiles.count("AuthZconsent") > 100  # every consent decision of the demo's patients
    assert profiles.count("PatientQuery") >= 4  # each hospital's training-data use in each round


def _withdrawn_mrn(demo: DemoRun) -> str:
    with PseudonymTable(node_dir_for(demo.state, "hospital-a") / "pseudonyms.sqlite") as table:
        mapping = table.mapping(demo.mrns["hospital-a"])
    with open_ledger(state_dir=demo.state, org="consortium", role="admin") as ledger:
        for mrn, pseudonym in mapping.items():
            versions = ledger.evaluate("ConsentContract:consent_history", pseudonym)
            if any(v["value"] and v["value"]["status"] == "withdrawn" for v in versions):
                return mrn
    raise AssertionError("the demo has no patient at hospital-a who withdrew")


def test_withdrawn_patient_report_shows_round_1_only_and_forget_unlinks_the_mrn(demo: DemoRun) -> None:
    mrn = _withdrawn_mrn(demo)
    lookup = ["node", "pseudonym", "--hospital", "hospital-a"]
    code, pseudonym = demo.carefed(*lookup, stdin=mrn)  # at the hospital: only the pseudonym leaves
    assert code == 0 and mrn not in pseudonym, pseudonym
    code, output = demo.carefed("report", "access", "-", "--format", "json", stdin=pseudonym)
    assert code == 0, output
    report = json.loads(output)
    assert [use["round"] for use in report["data_uses"]] == [1]
    assert report["consent_history"][-1]["status"] == "withdrawn"

    code, output = demo.carefed("node", "forget", "--hospital", "hospital-a", stdin=mrn)
    assert code == 0, output
    code, output = demo.carefed(*lookup, stdin=mrn)
    assert code == 1 and "has no pseudonym for this patient" in output
    with PseudonymTable(node_dir_for(demo.state, "hospital-a") / "pseudonyms.sqlite") as table:
        assert table.lookup(mrn) is None


def _written_outside_the_hospitals(demo: DemoRun) -> list[Path]:
    outside = [p for p in demo.state.iterdir() if p.name not in PRIVATE_TO_HOSPITALS]
    return [*outside, demo.runs, demo.exports]


def test_no_identifier_in_anything_the_demo_wrote_outside_the_hospitals(demo: DemoRun, tmp_path: Path) -> None:
    known = KnownIdentifiers(mrns=[m for mrns in demo.mrns.values() for m in mrns])
    targets = _written_outside_the_hospitals(demo)
    assert any(p.name == "ledger" for p in targets) and any(p.name == "flwr" for p in targets)  # ledger and logs
    hits = scan(targets, known)
    assert hits == [], "\n".join(map(str, hits[:20]))
    assert len(scan([demo.state / "nodes"], known)) > 100  # the scanner does see MRNs where they belong

    logs = tmp_path / "logs"
    shutil.copytree(demo.state / "flwr" / "logs", logs)
    victim = sorted(logs.glob("*.log"))[0]
    victim.write_text(victim.read_text() + f"\ntraining patient {demo.mrns['hospital-b'][3]}\n")
    hits = scan([logs], known)
    assert [(h.path, h.kind) for h in hits] == [(victim, "MRN")]
