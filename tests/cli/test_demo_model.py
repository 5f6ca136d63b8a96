"""`carefed demo --model logistic|mlp --hidden SIZES`: the network the demo's run, hospitals and baselines train."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from carefed.cli import app
from harness.demo import DEFAULT_MLP_HIDDEN, describe_model, hidden_layers, plain_model

runner = CliRunner()


@pytest.mark.parametrize(
    ("model", "hidden", "layers"),
    [
        ("logistic", None, ()),
        ("mlp", None, DEFAULT_MLP_HIDDEN),
        ("mlp", "32,16", (32, 16)),
        ("mlp", " 8 , 4 ", (8, 4)),
        ("mlp", "1", (1,)),
    ],
)
def test_the_model_options_name_the_hidden_layers(model: str, hidden: str | None, layers: tuple[int, ...]) -> None:
    assert hidden_layers(model, hidden) == layers


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--model", "mlp", "--hidden", "32,x"], "--hidden: 'x' is not an integer in '32,x'"),
        (["--model", "mlp", "--hidden", "1.5"], "--hidden: '1.5' is not an integer"),
        (["--model", "mlp", "--hidden", "0"], "--hidden: layer size 0 in '0' is not positive"),
        (["--model", "mlp", "--hidden", "32,-4"], "--hidden: layer size -4 in '32,-4' is not positive"),
        (["--model", "mlp", "--hidden", ""], "--hidden: no layer sizes given for --model mlp"),
        (["--model", "mlp", "--hidden", "16,,8"], "--hidden: an empty layer size in '16,,8'"),
        (["--hidden", "32,16"], "--hidden: logistic regression has no hidden layers; add --model mlp"),
    ],
)
def test_a_bad_hidden_value_is_one_error_line_naming_the_option_and_the_fix(
    args: list[str], says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["demo", *args, "--state-dir", "state"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.output.startswith("error: --hidden: ")
    assert says in result.output
    assert "e.g. --hidden 32,16" in result.output or "drop --hidden" in result.output, "the fix"
    assert not (tmp_path / "state").exists() and not (tmp_path / "runs").exists(), "refused before any work"


def test_a_model_that_is_not_offered_is_refused_with_the_choices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["demo", "--model", "forest"])
    assert result.exit_code == 2 and "logistic" in result.output and "mlp" in result.output
    with pytest.raises(ValueError, match="--model: 'forest' is not one of logistic, mlp"):
        hidden_layers("forest")


def test_the_help_describes_model_and_hidden() -> None:
    wide = {**os.environ, "COLUMNS": "200", "TERM": "dumb"}
    text = runner.invoke(app, ["demo", "--help"], env=wide).output
    assert "--model" in text and "logistic|mlp" in text and "[default: logistic]" in text
    assert "--hidden" in text and "comma-separated positive integers" in text and "32,16" in text


def test_the_demo_spec_and_its_baselines_have_the_chosen_network(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    from harness.demo_data import build_demo_data

    data = build_demo_data(tmp_path, ["hospital-a", "hospital-b"], hidden=(32, 16))
    assert data.spec.hidden == (32, 16) and '"hidden":[32,16]' in data.spec.to_json()
    assert describe_model(len(data.spec.features), data.spec.hidden) == "MLP 30→32→16→1 (ReLU)"
    assert describe_model(30, ()) == "logistic regression"
    mlp = plain_model(data.spec.hidden)[-1]
    assert isinstance(mlp, MLPClassifier) and mlp.hidden_layer_sizes == (32, 16) and mlp.activation == "relu"
    assert isinstance(plain_model(())[-1], LogisticRegression)


def test_an_mlp_trains_with_a_capped_adam_step_and_logistic_regression_keeps_its_own() -> None:
    from harness.demo import MLP_LEARNING_RATE, SYNTHEA_TRAINING, TRAINING, training_settings

    assert training_settings("breast-cancer", ()) is TRAINING
    assert training_settings("synthea", ()) is SYNTHEA_TRAINING
    mlp = training_settings("breast-cancer", (16,))
    assert mlp == {**TRAINING, "learning-rate": MLP_LEARNING_RATE} and TRAINING["learning-rate"] == 0.2
    assert training_settings("synthea", (32, 16))["learning-rate"] == MLP_LEARNING_RATE
    assert training_settings("synthea", (32, 16))["local-epochs"] == SYNTHEA_TRAINING["local-epochs"]
