"""Consortium ledger: the `Ledger` interface and its backends.

Top level: ``ledger`` (the interface, value types, settings, ``open_ledger()`` — the one entry point), ``outbox``
(durable writes off the hot path), ``identities`` (CAs, MSPs, TLS), ``merkle`` (RFC 9162), ``shim`` (the contract
API's import), ``cli`` (``carefed ledger …``). Subpackages: ``contracts`` (the chaincode both backends run),
``embedded`` (the default backend and its verifier), ``fabric`` (the Fabric Gateway client and network operations).
"""
