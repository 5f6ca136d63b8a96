"""The one place CareFed imports ``fabric-chaincode-python`` from: it undoes the library's logging set-up.

Why this module exists (upstream 2.5.4, file ``fabric_shim/logging.py``): importing the package runs
``logging.basicConfig(level=DEBUG)`` on the *root* logger, and the shim then logs every proposal, every
``put_state`` value and every chaincode error message at INFO under the logger name ``"asyncio"``
(``fabric_shim/stub.py``, ``fabric_shim/handler.py``). Consent values, pseudonyms and audit arguments would land
in every CareFed log. Importing the library through this module instead:

* restores the root logger's level and handlers to what they were before the import;
* sets the ``"asyncio"`` logger to WARNING, and
* installs a filter that drops any record *emitted from the library's own files* below WARNING, so the payload
  logging stays off even if an application later lowers the ``"asyncio"`` level for its own debugging.

Every module that needs the contract API or the stub (the contracts, the embedded ledger, the chaincode server)
imports these names from here, never from ``fabric_chaincode_python`` directly.
"""

from __future__ import annotations

import logging
import os

_root = logging.getLogger()
_root_level, _root_handlers = _root.level, list(_root.handlers)

from fabric_chaincode_python.fabric_contract_api import (  # noqa: E402  (must follow the snapshot above)
    Contract,
    ContractChaincode,
    TransactionContextInterface,
)
from fabric_chaincode_python.fabric_shim.stub import ChaincodeStub  # noqa: E402


class DropLibraryPayloadLogs(logging.Filter):
    """Refuse every record below WARNING that was emitted from fabric-chaincode-python's own source files."""

    def __init__(self, library_root: str) -> None:
        super().__init__()
        self._library_root = library_root

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.pathname.startswith(self._library_root)


def _quiet_library_logging() -> None:
    import fabric_chaincode_python

    library_root = os.path.dirname(os.path.abspath(fabric_chaincode_python.__file__))
    for handler in list(_root.handlers):
        if handler not in _root_handlers:
            _root.removeHandler(handler)
    _root.setLevel(_root_level)
    shim_logger = logging.getLogger("asyncio")
    shim_logger.setLevel(logging.WARNING)
    if not any(isinstance(f, DropLibraryPayloadLogs) for f in shim_logger.filters):
        shim_logger.addFilter(DropLibraryPayloadLogs(library_root))


_quiet_library_logging()

__all__ = ["ChaincodeStub", "Contract", "ContractChaincode", "TransactionContextInterface"]
