"""No argument value reaches the logs at INFO or below, even with the root logger at DEBUG.

The Fabric Python shim logs every ``put_state`` value at INFO on the ``asyncio`` logger and sets the root
logger to DEBUG when imported; ``fabric_network.shim`` undoes that. Each check runs in a fresh interpreter
(logging configuration is process-global), and a control run importing the library directly shows the leak
the test guards against.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECRET = "a1" * 32  # a pseudonym-shaped value that must never be logged

UPSTREAM_STUB_PUT_STATE = textwrap.dedent("""
    import asyncio
    from {module} import ChaincodeStub

    class Client:
        async def handle_put_state(self, *args):
            return None

    stub = ChaincodeStub(Client(), "carefed", "tx1", None, None)
    asyncio.run(stub.put_state("consent-key", {secret!r}.encode()))
""")


def _run(code: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_the_upstream_shim_leaks_values_without_carefeds_import() -> None:
    output = _run(
        "import logging\n"
        + UPSTREAM_STUB_PUT_STATE.format(module="fabric_chaincode_python.fabric_shim.stub", secret=SECRET)
    )
    assert SECRET in output, "control: the library logs put_state values"


def test_importing_through_carefed_silences_the_shim_even_at_debug() -> None:
    code = (
        "import logging\nimport fabric_network.shim\nlogging.basicConfig(level=logging.DEBUG)\n"
        "logging.getLogger('asyncio').setLevel(logging.DEBUG)\n"
        + UPSTREAM_STUB_PUT_STATE.format(module="fabric_network.shim", secret=SECRET)
        + "\nlogging.getLogger('carefed.check').info('logging works')\n"
    )
    output = _run(code)
    assert "logging works" in output and SECRET not in output


def test_ledger_transactions_log_no_argument_values(tmp_path: Path) -> None:
    code = """
        import logging, sys
        logging.basicConfig(level=logging.DEBUG)
        from fabric_network.identities import init_identities
        from fabric_network.ledger import open_ledger
        from fabric_network.outbox import open_outbox
        init_identities(sys.argv[1], ["hospital-a"])
        secret = sys.argv[2]
        with open_ledger(state_dir=sys.argv[1], org="hospital-a") as ledger:
            ledger.submit("ConsentContract:record_consent", secret, "HRESCH", "research", "2026-01-01T00:00:00Z", "")
            ledger.evaluate("ConsentContract:read_consent", secret, "HRESCH")
            try:
                ledger.submit("ConsentContract:record_consent", secret, "HRESCH", "research", "bad", "")
            except Exception:
                pass
        outbox = open_outbox("log-check", state_dir=sys.argv[1], org="hospital-a")
        outbox.enqueue("ConsentContract:withdraw_consent", secret, "HRESCH")
        outbox.enqueue("ConsentContract:withdraw_consent", secret, "HRESCH")
        assert outbox.flush(10)
        outbox.close()
        logging.getLogger("carefed.check").info("done")
    """
    output = _run(textwrap.dedent(code), str(tmp_path), SECRET)
    assert "done" in output and "outbox: delivered" in output
    assert SECRET not in output
