"""Consortium side: Flower ServerApp with HE-FedAvg, key ceremony, model registry, the federated demo."""
