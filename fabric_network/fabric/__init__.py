"""The Hyperledger Fabric backend: the Gateway client and ledger on it, and the native network's operations.

Client side: ``gateway`` (Gateway protocol over gRPC/TLS), ``messages`` (proposals, envelopes, signatures),
``ledger`` (the ``Ledger`` interface on a peer), ``verify`` (block chain and orderer signatures).
Operations: ``install`` (binaries), ``network`` (configuration and lifecycle), ``processes`` (supervision),
``chaincode_service`` (the contracts as a CCaaS server), ``cli`` (``carefed fabric …``).
"""
