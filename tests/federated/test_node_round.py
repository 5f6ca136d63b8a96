"""A hospital's round without Flower: what it refuses, what it charges, what it sends (real ledger and keys)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from consortium.keys import public_context_path
from fabric_network.contracts.common import opaque_id
from fabric_network.ledger import open_ledger
from hospital_node.config import NodeConfig, node_dir_for
from hospital_node.training import RoundDeclined, RoundRequest, evaluate_final, train_round, train_round_reply


def _request(consortium: Any, **changes: object) -> RoundRequest:
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
    return replace(request, **changes)  # type: ignore[arg-type]


def _budget_spent(state: Path, msp: str) -> float:
    with open_ledger(state_dir=state, org="consortium") as ledger:
        return float(ledger.evaluate("PrivacyBudgetContract:read_budget", msp, "HRESCH")["spent"])


def test_two_rounds_charge_the_run_epsilon_and_decrypt_to_one_model(small_consortium: Any) -> None:
    from privacy.he import PublicContext, aggregate

    state = small_consortium.state
    nodes = [NodeConfig.load(node_dir_for(state, h)) for h in ("hospital-a", "hospital-b")]
    before = _budget_spent(state, "HospitalAMSP")
    public = PublicContext.deserialize(public_context_path(state).read_bytes())
    request = _request(small_consortium)
    replies = [train_round(node, request) for node in nodes]
    summed = aggregate(public, [bytes(r["update"]) for r in replies])
    second = [train_round(node, replace(request, round=2, aggregate=summed)) for node in nodes]
    assert second[0]["model-sha256"] == second[1]["model-sha256"], "both hospitals decrypt the same model"
    assert abs(second[0]["epsilon-run"] - 3.0) < 0.05, "two rounds spend the run's target ε (RDP composition)"
    assert _budget_spent(state, "HospitalAMSP") - before == pytest.approx(second[0]["epsilon-run"])
    last = aggregate(public, [bytes(r["update"]) for r in second])
    final = evaluate_final(nodes[0], replace(request, round=2, aggregate=last))
    assert final["status"] == "ok" and 0.5 < final["auc"] <= 1.0


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
        assert not node.dp_history(request.run_id).exists(), "nothing trained"
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
