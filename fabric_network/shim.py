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
from collections.abc import Iterator
from typing import Any

import jsonschema_rs

_root = logging.getLogger()
_root_level, _root_handlers = _root.level, list(_root.handlers)

from fabric_chaincode_python.fabric_contract_api import (  # noqa: E402  (must follow the snapshot above)
    Contract,
    ContractChaincode,
    TransactionContextInterface,
)
from fabric_chaincode_python.fabric_contract_api.serializer import JSONSerializer  # noqa: E402
from fabric_chaincode_python.fabric_shim.handler import Handler  # noqa: E402
from fabric_chaincode_python.fabric_shim.server import ChaincodeService  # noqa: E402
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


class _RustFirstSchema:
    """A compiled jsonschema validator whose ``iter_errors`` asks jsonschema-rs first: valid documents (nearly
    all) cost ~2 µs instead of ~200 µs; invalid ones still get jsonschema's own errors."""

    def __init__(self, compiled: Any) -> None:
        self._compiled = compiled
        self._fast = jsonschema_rs.validator_for(compiled.schema)

    def iter_errors(self, document: Any) -> Iterator[Any]:
        if self._fast.is_valid(document):
            return iter(())
        return iter(self._compiled.iter_errors(document))


class FastSchemaSerializer(JSONSerializer):  # type: ignore[misc]  # the library ships no type hints
    """The contract API's JSON serializer (``ContractChaincode.TransactionSerializer``, its documented extension
    point) with argument and return-value schema checks run by jsonschema-rs. Same decisions, same messages;
    it exists because upstream ``_validate_against_schema`` is half of the CPU time of a small transaction."""

    def __init__(self) -> None:
        super().__init__()
        self._fast: dict[int, _RustFirstSchema] = {}

    def _validate_against_schema(
        self, prop_name: str, typ: Any, string_value: str, obj: Any, compiled_schema: Any
    ) -> Exception | None:
        if hasattr(compiled_schema, "iter_errors") and hasattr(compiled_schema, "schema"):
            fast = self._fast.get(id(compiled_schema))
            if fast is None or fast._compiled is not compiled_schema:
                fast = self._fast[id(compiled_schema)] = _RustFirstSchema(compiled_schema)
            compiled_schema = fast
        result: Exception | None = super()._validate_against_schema(prop_name, typ, string_value, obj, compiled_schema)
        return result


__all__ = [
    "ChaincodeService",
    "ChaincodeStub",
    "Contract",
    "ContractChaincode",
    "FastSchemaSerializer",
    "Handler",
    "TransactionContextInterface",
]
