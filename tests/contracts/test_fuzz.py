"""Property: whatever arguments arrive, a transaction either succeeds or is refused with a message naming one
of its own parameters (or the caller) — never a Python error from deep inside — and a refusal commits nothing."""

from __future__ import annotations

import inspect
import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabric_network.contracts import CONTRACT_CLASSES, evaluate_functions
from fabric_network.ledger import ContractRejected
from tests.contracts.backends import LedgerNetwork
from tests.mutation import MUTANT_NAME_MARK

SUBMITTED = sorted(
    (cls.Name, name, [p for p in inspect.signature(fn).parameters if p not in ("self", "ctx")])
    for cls in CONTRACT_CLASSES
    for name, fn in inspect.getmembers(cls, inspect.iscoroutinefunction)
    if not name.startswith("_") and MUTANT_NAME_MARK not in name and f"{cls.Name}:{name}" not in evaluate_functions()
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
argument = st.one_of(
    st.text(max_size=80),
    st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
    st.sampled_from(["HRESCH", "TREAT", "research", "2026-01-01T00:00:00Z", "", "1", "-1", "nan", "HospitalAMSP"]),
    json_values.map(json.dumps),
)


@pytest.mark.parametrize(("contract", "function", "params"), SUBMITTED, ids=[f"{c}:{f}" for c, f, _ in SUBMITTED])
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_arbitrary_arguments_are_accepted_or_refused_by_name(
    network: LedgerNetwork, contract: str, function: str, params: list[str], data: Any
) -> None:
    who = data.draw(st.sampled_from(["hospital-a", "consortium"]), label="who")
    args = [data.draw(argument, label=name) for name in params]
    ledger = network.ledger(who)
    height = ledger.height()
    try:
        ledger.submit(f"{contract}:{function}", *args)
    except ContractRejected as refusal:
        message = str(refusal).removeprefix(f"{contract}:{function}: ")
        field = re.match(r"[A-Za-z_][A-Za-z0-9_]*", message)  # parameter names may end in digits (…_sha256)
        assert field and field.group() in {*params, "caller"}, message
        assert ledger.height() == height
