"""CareFed's accountant: the same ε as an independent implementation (Opacus' RDP analysis), no torch needed."""

from __future__ import annotations

import subprocess
import sys

import pytest
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

from privacy.accountant import RDP_ORDERS, AccountingError, RdpAccountant, epsilon_of, fits_budget, understates


@pytest.mark.parametrize(
    ("noise", "rate", "steps", "delta"),
    [(1.1, 0.01, 1000, 1e-5), (0.8, 0.2, 10, 1e-4), (3.0, 1.0, 5, 1e-5), (1.5, 1 / 6, 12, 1e-3), (50, 0.5, 3, 1e-5)],
)
def test_epsilon_agrees_with_opacus_on_the_same_orders(noise: float, rate: float, steps: int, delta: float) -> None:
    rdp = compute_rdp(q=rate, noise_multiplier=noise, steps=steps, orders=list(RDP_ORDERS))
    opacus_epsilon, _ = get_privacy_spent(orders=list(RDP_ORDERS), rdp=rdp, delta=delta)
    assert epsilon_of([(noise, rate, steps)], delta) == pytest.approx(opacus_epsilon, rel=1e-10)


def test_history_composes_and_round_trips() -> None:
    accountant = RdpAccountant()
    assert accountant.epsilon(1e-5) == 0.0, "no step spends nothing"
    first = accountant.epsilon_increment((1.2, 0.1, 20), 1e-5)
    accountant.step(1.2, 0.1, 20)
    second = accountant.epsilon_increment((1.2, 0.1, 20), 1e-5)
    accountant.step(1.2, 0.1, 20)
    assert first + second == pytest.approx(epsilon_of([(1.2, 0.1, 40)], 1e-5), abs=1e-12)
    assert RdpAccountant.from_state(accountant.to_state()).history == accountant.history
    with pytest.raises(AccountingError, match="sample_rate"):
        accountant.step(1.0, 1.5, 1)
    with pytest.raises(AccountingError, match="not carefed-rdp"):
        RdpAccountant.from_state({**accountant.to_state(), "accountant": "prv"})


def test_one_budget_rule() -> None:
    assert fits_budget(2.0, 1.0, 3.0) and fits_budget(2.0, 1.0 + 1e-12, 3.0) and not fits_budget(2.0, 1.01, 3.0)
    assert understates(0.99, 1.0) and not understates(1.0 - 1e-12, 1.0)


def test_the_accountant_imports_without_torch() -> None:
    """The contracts import it on every endorsing peer; torch must stay out."""
    code = "import sys, privacy.accountant, fabric_network.contracts; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
