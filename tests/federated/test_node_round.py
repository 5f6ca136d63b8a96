"""A hospital's round without Flower: what it refuses, what it charges, what it sends (real ledger and keys)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from compliance.reports import privacy_budget_report
from consortium.keys import public_context_path
from fabric_network.contracts.common import opaque_id
from fabric_network.ledger import open_ledger
from federation.layout import node_dir_for
from federation.messages import RoundRequest
from hospital_node.config import NodeConfig
from hospital_node.training import RoundDeclined, evaluate_final, train_round, train_round_reply

# Real training rounds under DP and HE per test, sized for a loaded 2-core machine.
pytestmark = pytest.mark.timeout(600)

APPROVED = {"hospital-a": "approve", "hospital-b": "approve", "hospital-c": "approve"}


def _proposed(consortium: Any, request: RoundRequest, votes: dict[str, str], *, start: bool = True) -> None:
    """Propose the request's run on the ledger, let the hospitals vote, and start it (if `start`)."""
    from hospital_node.governance import vote

    spec = {
        "purpose": request.purpose,
        "hospitals": ["HospitalAMSP", "HospitalBMSP", "HospitalCMSP"],
        "dp": {"epsilon": request.epsilon, "delta": request.delta, "accountant": "rdp"},
        "he": {"scheme": "ckks"},
        "code_version": "0.1.0",
        "rounds": request.rounds,
        "schema_sha256": request.spec.sha256,
    }
    with open_ledger(state_dir=consortium.state, org="consortium") as ledger:
        ledger.submit("LineageContract:register_run", request.run_id, spec)
        for hospital, decision in votes.items():
            with open_ledger(state_dir=consortium.state, org=hospital) as own:
                vote(own, request.run_id, decision)
        if start:
            ledger.submit("LineageContract:start_run", request.run_id)


def _request(consortium: Any, votes: dict[str, str] | None = None, **changes: object) -> RoundRequest:
    """A round request of a fresh run that (by default) every hospital approved and the consortium started."""
    request = RoundRequest(
        run_id=opaque_id("run"),
        round=1,
        rounds=2,
        purpose="HRESCH",
        spec=consortium.data.spec,
        he=True,
        epsilon=3.0,
        delta=1e-5,
        max_grad_norm=1.0,
        local_epochs=1,
        batch_size=32,
        learning_rate=0.2,
        record_unit=1000.0,
        aggregate=b"",
    )
    request = replace(request, **changes)  # type: ignore[arg-type]
    _proposed(consortium, request, APPROVED if votes is None else votes)
    return request


def _budget_spent(state: Path, msp: str) -> float:
    with open_ledger(state_dir=state, org="consortium") as ledger:
        return float(ledger.evaluate("PrivacyBudgetContract:read_budget", msp, "HRESCH")["spent"])


def test_two_rounds_charge_the_run_epsilon_and_decrypt_to_one_model(small_consortium: Any) -> None:
    from privacy.he import PublicContext, aggregate

    state = small_consortium.state
    nodes = [NodeConfig.load(node_dir_for(state, h)) for h in ("hospital-a", "hospital-b")]
    before = _budget_spent(state, "HospitalAMSP")
    public = PublicContext.deserialize(public_context_path(state).read_bytes())
    # Three local epochs: with one, DP noise over so few steps left the model's AUC anywhere in 0.42-1.0 on
    # hospital-a's 126 held-out pairs (one CI failure); with three it stayed in 0.95-0.99 over 6 runs.
    request = _request(small_consortium, local_epochs=3)
    replies = [train_round(node, request) for node in nodes]
    summed = aggregate(public, [bytes(r["update"]) for r in replies])
    second = [train_round(node, replace(request, round=2, aggregate=summed)) for node in nodes]
    assert second[0]["model-sha256"] == second[1]["model-sha256"], "both hospitals decrypt the same model"
    assert abs(second[0]["epsilon-run"] - 3.0) < 0.05, "two rounds spend the run's target ε (RDP composition)"
    assert _budget_spent(state, "HospitalAMSP") - before == pytest.approx(second[0]["epsilon-run"])
    last = aggregate(public, [bytes(r["update"]) for r in second])
    final = evaluate_final(nodes[0], replace(request, round=2, aggregate=last))
    assert final["status"] == "ok" and 0.5 < final["auc"] <= 1.0
    with open_ledger(state_dir=state, org="consortium") as ledger:
        recomputed = [
            r for r in privacy_budget_report(ledger, recompute=True)["recomputed"] if r["run_id"] == request.run_id
        ]
    assert len(recomputed) == 4, "two hospitals, two rounds"
    assert all(abs(r["difference"]) <= 1e-6 for r in recomputed), "recomputed from the ledger alone, to 1e-6"
    last = {r["hospital"]: r["run_epsilon"] for r in recomputed if r["round"] == 2}
    assert last == pytest.approx({"HospitalAMSP": second[0]["epsilon-run"], "HospitalBMSP": second[1]["epsilon-run"]})


def _registered_run(consortium: Any, tmp_path: Path, votes: dict[str, str]) -> tuple[dict[str, Any], Any]:
    """A run proposed through the ServerApp's own settings (run config → `run_proposal`) and voted on; its run
    config and settings."""
    from consortium.proposals import run_settings
    from consortium.server_app import run_proposal

    config = {
        "run-id": opaque_id("run"),
        "state-dir": str(consortium.state),
        "results-path": str(tmp_path / "results.json"),
        "hospitals": "hospital-a,hospital-b,hospital-c",
        "num-rounds": 2,
        "spec": consortium.data.spec.to_json(),
    }
    settings = run_settings(config)
    with open_ledger(state_dir=consortium.state, org="consortium") as ledger:
        ledger.submit("LineageContract:register_run", settings.run_id, run_proposal(settings))
    for hospital, decision in votes.items():
        with open_ledger(state_dir=consortium.state, org=hospital) as ledger:
            ledger.submit("LineageContract:vote_run", settings.run_id, decision)
    return config, settings


def test_one_approval_of_three_the_start_and_the_nodes_refuse_naming_who_has_not_approved(
    small_consortium: Any, tmp_path: Path
) -> None:
    from consortium.keys import KeyGuard
    from consortium.server_app import FederatedRun

    state = small_consortium.state
    request = _request(small_consortium, round=1)
    _, settings = _registered_run(small_consortium, tmp_path, {"hospital-a": "approve", "hospital-b": "reject"})
    server = FederatedRun(None, settings, KeyGuard())  # type: ignore[arg-type]  # refused before it talks to a node
    try:
        server.run()
    finally:
        server.close()
    assert server.status.startswith("refused to start: not approved by a majority of its hospitals (1 of 3")
    assert "not approved by HospitalBMSP, HospitalCMSP (HospitalBMSP rejected)" in server.status
    node = NodeConfig.load(node_dir_for(state, "hospital-a"))
    before = _budget_spent(state, "HospitalAMSP")
    asked = replace(request, run_id=settings.run_id, rounds=2, epsilon=settings.training.epsilon)
    with pytest.raises(RoundDeclined, match="has not started: not approved by a majority") as refused:
        train_round(node, asked)
    assert "not approved by HospitalBMSP, HospitalCMSP" in str(refused.value) and refused.value.permanent
    assert _budget_spent(state, "HospitalAMSP") == before, "nothing charged, nothing trained"


def test_the_aggregator_refuses_to_start_a_run_on_terms_nobody_approved(small_consortium: Any, tmp_path: Path) -> None:
    """Every hospital approved a logistic regression; an aggregator configured with another network (or another
    code version, HE setting, …) must not start the run, and says which terms differ."""
    from consortium.keys import KeyGuard
    from consortium.proposals import run_settings
    from consortium.server_app import FederatedRun

    state = small_consortium.state
    config, approved = _registered_run(small_consortium, tmp_path, APPROVED)
    other_network = replace(small_consortium.data.spec, hidden=(16,)).to_json()
    server = FederatedRun(None, run_settings({**config, "spec": other_network}), KeyGuard())  # type: ignore[arg-type]
    try:
        server.run()
    finally:
        server.close()
    assert server.status == "refused to start: the settings differ from the proposal on the ledger in ['schema_sha256']"
    with open_ledger(state_dir=state, org="consortium") as ledger:
        assert ledger.evaluate("LineageContract:read_run", approved.run_id)["status"] == "proposed", "not started"


def test_two_of_three_train_and_the_hospital_that_rejected_does_not(small_consortium: Any) -> None:
    state = small_consortium.state
    request = _request(small_consortium, {"hospital-a": "approve", "hospital-b": "approve", "hospital-c": "reject"})
    before = _budget_spent(state, "HospitalCMSP")
    rejecting = NodeConfig.load(node_dir_for(state, "hospital-c"))
    reply = train_round_reply(rejecting, request)
    assert reply["status"] == "declined" and reply["permanent"]
    assert "HospitalCMSP has not approved run" in reply["reason"] and "majority approved" in reply["reason"]
    assert _budget_spent(state, "HospitalCMSP") == before
    approving = train_round(NodeConfig.load(node_dir_for(state, "hospital-a")), request)
    assert approving["status"] == "ok"
    with open_ledger(state_dir=state, org="consortium") as ledger:
        vouched = ledger.evaluate("LineageContract:read_update", request.run_id, "1", "HospitalAMSP")
    assert vouched["update_sha256"] == approving["update-sha256"], "the hospital vouched for what it sent"
    hospital_b = NodeConfig.load(node_dir_for(state, "hospital-b"))
    other_network = replace(request.spec, hidden=(8,))
    for changed, term in [
        (replace(request, epsilon=request.epsilon * 2), "epsilon"),
        (replace(request, he=False), "he (approved True, asked False)"),
        (replace(request, spec=other_network), "schema_sha256"),
    ]:
        with pytest.raises(RoundDeclined, match="differs from the approved run") as declined:
            train_round(hospital_b, changed)
        assert term in str(declined.value)


def test_invalid_data_trains_nothing_and_charges_nothing(small_consortium: Any, tmp_path: Path) -> None:
    state = small_consortium.state
    node = NodeConfig.load(node_dir_for(state, "hospital-b"))
    bad = tmp_path / "bad.csv"
    lines = node.data.read_text().splitlines()
    header, first, second = lines[0], lines[1].split(","), lines[2].split(",")
    first[1] = ""  # missing label
    second[2] = "abc"  # non-numeric feature
    bad.write_text("\n".join([header, ",".join(first), ",".join(second), *lines[3:]]) + "\n")
    before = _budget_spent(state, "HospitalBMSP")
    reply = train_round_reply(node.model_copy(update={"data": bad}), _request(small_consortium))
    assert reply["status"] == "declined"
    assert "line 2: column 'malignant': missing label" in reply["reason"]
    assert "line 3: column 'mean_radius': non-numeric value 'abc'" in reply["reason"]
    assert _budget_spent(state, "HospitalBMSP") == before
    dropped = train_round(node.model_copy(update={"data": bad, "drop_bad_rows": True}), _request(small_consortium))
    assert dropped["status"] == "ok"


def test_unreadable_consent_state_fails_closed(small_consortium: Any, tmp_path: Path) -> None:
    node = NodeConfig.load(node_dir_for(small_consortium.state, "hospital-a"))
    with pytest.raises(RoundDeclined, match="fail closed"):
        unreachable = node.model_copy(update={"ledger_state_dir": tmp_path / "no-ledger-here"})
        train_round(unreachable, _request(small_consortium))


def test_spent_budget_refuses_before_training(small_consortium: Any) -> None:
    state = small_consortium.state
    node = NodeConfig.load(node_dir_for(state, "hospital-a"))
    request = _request(small_consortium)
    spent = _budget_spent(state, "HospitalAMSP")
    with open_ledger(state_dir=state, org="consortium") as ledger:
        ledger.submit("PrivacyBudgetContract:set_budget_limit", "HospitalAMSP", "HRESCH", repr(spent + 0.01))
    try:
        with pytest.raises(RoundDeclined, match="privacy budget exhausted for hospital-a") as refused:
            train_round(node, request)
        assert refused.value.permanent
        assert _budget_spent(state, "HospitalAMSP") == pytest.approx(spent)
    finally:
        with open_ledger(state_dir=state, org="consortium") as ledger:
            ledger.submit("PrivacyBudgetContract:set_budget_limit", "HospitalAMSP", "HRESCH", "100.0")


def test_update_is_ciphertext_the_aggregator_cannot_open(small_consortium: Any) -> None:
    from privacy.he import MissingSecretKeyError, PublicContext, decrypt

    node = NodeConfig.load(node_dir_for(small_consortium.state, "hospital-b"))
    payload = bytes(train_round(node, _request(small_consortium))["update"])
    assert payload.startswith(b"CFHE")
    public = PublicContext.deserialize(public_context_path(small_consortium.state).read_bytes())
    with pytest.raises(MissingSecretKeyError):
        decrypt(public, payload)


def test_node_status_shows_budget_and_runs(small_consortium: Any) -> None:
    from typer.testing import CliRunner

    from carefed.cli import app

    state = str(small_consortium.state)
    result = CliRunner().invoke(
        app, ["node", "status", "--hospital", "hospital-b", "--state-dir", state], terminal_width=200
    )
    assert result.exit_code == 0, result.output
    assert "ε spent" in result.output and "rounds, ε" in result.output and "pseudonyms" in result.output


def test_malformed_fhir_export_trains_nothing_and_charges_nothing(small_consortium: Any, tmp_path: Path) -> None:
    state = small_consortium.state
    node = NodeConfig.load(node_dir_for(state, "hospital-a"))
    schema = tmp_path / "fhir.toml"
    schema.write_text(
        'mrn_column = "mrn"\nlabel_column = "y"\n[index]\ndate = 2018-01-01\n'
        '[label]\ncodes = ["snomed|44054006"]\n[[features]]\nname = "age"\nsource = "age"\n'
    )
    export = tmp_path / "export"
    export.mkdir()
    (export / "Patient.ndjson").write_text(
        '{"resourceType": "Patient", "id": "p1", "birthDate": "1970-01-01"}\n{"resourceType": "Patient", "id": \n'
    )
    before = _budget_spent(state, "HospitalAMSP")
    reply = train_round_reply(
        node.model_copy(update={"data": export, "schema_path": schema}), _request(small_consortium)
    )
    assert reply["status"] == "declined"
    assert f"{export / 'Patient.ndjson'} line 2: column '*': not valid JSON" in reply["reason"]
    assert _budget_spent(state, "HospitalAMSP") == before


def test_propose_then_approve_and_reject_from_the_command_line(small_consortium: Any, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from carefed.cli import app

    def carefed(*args: str, answer: str | None = None) -> Any:
        state = ["--state-dir", str(small_consortium.state)]
        return CliRunner().invoke(app, [*args, *state], input=answer, terminal_width=200)

    spec = tmp_path / "spec.json"
    spec.write_text(small_consortium.data.spec.to_json())
    run_id = opaque_id("run")
    proposed = carefed(
        "consortium", "propose", run_id, "--hospitals", "hospital-a,hospital-b,hospital-c", "--spec", str(spec)
    )
    assert proposed.exit_code == 0, proposed.output
    declined = carefed("node", "approve", run_id, "--hospital", "hospital-a", answer="n\n")
    assert declined.exit_code == 1 and "HRESCH" in declined.output and "ε=3, δ=1e-05" in declined.output
    approved = carefed("node", "approve", run_id, "--hospital", "hospital-a", "--yes")
    assert approved.exit_code == 0, approved.output
    assert "1 of 3 approved (2 needed); the run may not start yet" in approved.output
    rejected = carefed("node", "reject", run_id, "--hospital", "hospital-b", "--yes")
    assert "HospitalAMSP (approve)" in rejected.output and "HospitalBMSP voted reject" in rejected.output
    unknown = carefed("node", "approve", opaque_id("run"), "--hospital", "hospital-a", "--yes")
    assert unknown.exit_code != 0 and "RUN" in unknown.output
    with open_ledger(state_dir=small_consortium.state, org="consortium") as ledger:
        approval = ledger.evaluate("LineageContract:run_approval", run_id)
    assert (approval["approved"], approval["rejected"]) == (["HospitalAMSP"], ["HospitalBMSP"])


def _charges(state: Path, msp: str, run_id: str) -> list[dict[str, Any]]:
    with open_ledger(state_dir=state, org="consortium") as ledger:
        charges = ledger.evaluate("PrivacyBudgetContract:list_budget_charges", msp, "HRESCH")
    return [c for c in charges if c["run_id"] == run_id]


def test_a_round_asked_again_is_resent_never_trained_twice(small_consortium: Any) -> None:
    """A resumed aggregator asks for a round the hospital already released: the same bytes, no second ε charge;
    from another global model, or with ε charged but nothing kept, the hospital declines instead of retraining."""
    state = small_consortium.state
    node = NodeConfig.load(node_dir_for(state, "hospital-a"))
    request = _request(small_consortium)
    first = train_round(node, request)
    again = train_round(node, request)
    assert again["replayed"] is True and "replayed" not in first
    assert bytes(again["update"]) == bytes(first["update"]) and again["update-sha256"] == first["update-sha256"]
    assert len(_charges(state, "HospitalAMSP", request.run_id)) == 1, "the repeat charged nothing"
    with pytest.raises(RoundDeclined, match="trained from a different global model"):
        train_round(node, replace(request, aggregate=b"another model"))
    kept = node.node_dir / "rounds" / request.run_id / "000001.update"
    kept.write_bytes(kept.read_bytes()[:-1] + b"\0")
    with pytest.raises(RoundDeclined, match="altered on disk"):
        train_round(node, request)
    for path in kept.parent.iterdir():
        path.unlink()
    with pytest.raises(RoundDeclined, match="charged already but no update was kept"):
        train_round(node, request)
    assert len(_charges(state, "HospitalAMSP", request.run_id)) == 1


def test_a_run_whose_checkpoint_is_damaged_ends_failed_on_the_ledger(small_consortium: Any, tmp_path: Path) -> None:
    """Resuming from a checkpoint that does not match what round 1 produced would train from the wrong model:
    the aggregator ends the run as failed on the ledger instead, and no hospital trains in it again."""
    from consortium.checkpoint import RunCheckpoint, checkpoint_dir
    from consortium.keys import KeyGuard
    from consortium.proposals import run_settings
    from consortium.server_app import FederatedRun

    state = small_consortium.state
    config, settings = _registered_run(small_consortium, tmp_path, APPROVED)
    with open_ledger(state_dir=state, org="consortium") as ledger:
        ledger.submit("LineageContract:start_run", settings.run_id)
    round_one = {"round": 1, "aggregate_sha256": "0" * 64, "participants": [], "model_sha256": ""}
    RunCheckpoint(settings.run_id, (round_one,), b"ciphertext").save(state)
    not_resumed = FederatedRun(None, run_settings(config), KeyGuard())  # type: ignore[arg-type]
    not_resumed.run()
    not_resumed.close()
    assert "was started already; if its aggregator stopped, resume it" in not_resumed.status
    server = FederatedRun(None, run_settings({**config, "resume": True}), KeyGuard())  # type: ignore[arg-type]
    try:
        server.run()
    finally:
        server.close()
    assert server.status.startswith(f"failed: cannot resume run {settings.run_id}: the aggregate on disk")
    assert (checkpoint_dir(state, settings.run_id) / "aggregate.bin").read_bytes() == b"ciphertext", "kept as found"
    with open_ledger(state_dir=state, org="consortium") as ledger:
        run = ledger.evaluate("LineageContract:read_run", settings.run_id)
    assert run["status"] == "failed" and run["end"]["reason"] == "resume-impossible"
    node = NodeConfig.load(node_dir_for(state, "hospital-a"))
    reply = train_round_reply(node, settings.request(1, b""))
    assert reply["status"] == "declined" and reply["permanent"], "nobody trains in an ended run"
    assert _charges(state, "HospitalAMSP", settings.run_id) == []
