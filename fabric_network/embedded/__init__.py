"""The embedded ledger (the default backend): the contracts in-process over SQLite, signed blocks, and its verifier.

``store`` holds what the ledger and its verifier share (schema, chaincode stub, transaction record rules),
``ledger`` the backend itself, ``verify`` the auditor's check of a ledger file.
"""
