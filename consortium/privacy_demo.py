"""Interim `carefed demo`: the privacy core end to end, in one process, until the federated (Flower) demo replaces it.

Three hospitals hold skewed shares of scikit-learn's breast-cancer data. Each round, each hospital trains the demo MLP
from the current global weights under DP-SGD (charging its own privacy budget), encrypts its sample-weighted update
under the consortium's CKKS key, and an aggregator that holds only the public context adds the ciphertexts. The
hospitals decrypt the weighted average and continue from it. A last round is attempted past the budget to show it is
refused before any training. Printed: ε per hospital, ciphertext sizes, decryption error, test AUC.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.table import Table
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from privacy import he
from privacy.budget import BudgetExceededError, PrivacyBudget
from privacy.dp import DPConfig, PrivateTrainer
from privacy.model import demo_mlp, load_parameters, parameters_to_vector, predict_proba

HOSPITALS = ("st-mary", "northgate", "riverside")
# Share of malignant / benign records each hospital receives: different sizes and case mixes.
MALIGNANT_SHARES = (0.55, 0.30, 0.15)
BENIGN_SHARES = (0.25, 0.35, 0.40)


@dataclass
class Hospital:
    name: str
    features: npt.NDArray[np.float64]
    labels: npt.NDArray[np.int64]
    budget: PrivacyBudget


def split_hospitals(
    features: npt.NDArray[np.float64], labels: npt.NDArray[np.int64], epsilon_limit: float, seed: int
) -> list[Hospital]:
    """Assign each record to one hospital, with class-dependent probabilities (skewed sizes and case mixes)."""
    rng = np.random.default_rng(seed)
    # In sklearn's encoding 0 is malignant, 1 benign.
    owner = np.where(
        labels == 0,
        rng.choice(len(HOSPITALS), size=len(labels), p=MALIGNANT_SHARES),
        rng.choice(len(HOSPITALS), size=len(labels), p=BENIGN_SHARES),
    )
    return [
        Hospital(name, features[owner == index], labels[owner == index], PrivacyBudget(name, epsilon_limit))
        for index, name in enumerate(HOSPITALS)
    ]


def run(console: Console, rounds: int = 3, epsilon_per_round: float = 1.0, epochs: int = 5, seed: int = 0) -> None:
    """Run the demonstration and print its figures."""
    features, labels = load_breast_cancer(return_X_y=True)
    train_x, test_x, train_y, test_y = train_test_split(
        features, labels, test_size=0.25, stratify=labels, random_state=seed
    )
    # Consortium-agreed feature scaling (the demo fits it on the training pool; a real consortium publishes it).
    scaler = StandardScaler().fit(train_x)
    hospitals = split_hospitals(scaler.transform(train_x), train_y, epsilon_limit=rounds * epsilon_per_round, seed=seed)
    weight_unit = sum(len(h.labels) for h in hospitals)  # public: the consortium's declared record total

    key = he.generate_secret_context()
    aggregator_context = he.PublicContext.deserialize(key.public().serialize())
    console.print(
        f"[bold]CareFed privacy-core demo[/]: {len(hospitals)} hospitals, {rounds} rounds, ε {epsilon_per_round} per "
        f"round (limit {rounds * epsilon_per_round}), CKKS N={key.parameters.poly_modulus_degree} "
        f"(aggregator context: {len(key.public().serialize())} bytes, no secret key)"
    )
    model = demo_mlp(n_features=features.shape[1], seed=seed)
    global_weights = parameters_to_vector(model)
    for round_number in range(1, rounds + 2):
        table = Table(title=f"round {round_number}")
        for column in ("hospital", "records", "malignant", "ε this round", "ε spent / limit", "update bytes", "x f32"):
            table.add_column(column, justify="right")
        encrypted, plain_updates, weights = [], [], []
        try:
            for hospital in hospitals:
                load_parameters(model, global_weights)
                config = DPConfig(
                    target_epsilon=epsilon_per_round,
                    target_delta=1 / (10 * len(hospital.labels)),
                    epochs=epochs,
                    batch_size=32,
                )
                result, hospital.budget = PrivateTrainer(model, hospital.features, hospital.labels, config).train(
                    hospital.budget
                )
                update = parameters_to_vector(model)
                weight = len(hospital.labels) / weight_unit
                encrypted.append(he.encrypt_weighted(key, update, weight))
                plain_updates.append(update)
                weights.append(weight)
                table.add_row(
                    hospital.name,
                    str(len(hospital.labels)),
                    f"{np.mean(hospital.labels == 0):.0%}",
                    f"{result.epsilon:.3f}",
                    f"{hospital.budget.epsilon_spent:.3f} / {hospital.budget.epsilon_limit:.1f}",
                    f"{len(encrypted[-1]):,}",
                    f"{len(encrypted[-1]) / (4 * (update.size + 1)):.3f}",
                )
        except BudgetExceededError as refused:
            console.print(f"round {round_number} refused before any training step: {refused}")
            break
        console.print(table)
        encrypted_sum = he.aggregate(aggregator_context, encrypted)
        global_weights = he.decrypt_weighted_average(key, encrypted_sum)
        error = float(np.max(np.abs(global_weights - np.average(plain_updates, axis=0, weights=weights))))
        load_parameters(model, global_weights)
        auc = roc_auc_score(test_y, predict_proba(model, scaler.transform(test_x)))
        console.print(
            f"aggregated {len(encrypted)} updates of {global_weights.size} parameters with the public context only: "
            f"sum {len(encrypted_sum):,} bytes; decryption error vs plaintext average {error:.1e}; "
            f"global model test AUC {auc:.3f}"
        )
