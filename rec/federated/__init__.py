"""Federated adaptation of a tenant's adapter with Flower on Ray (``rec fed``, docs/federated.md), and its
differential privacy (``rec.federated.privacy``, docs/federated-privacy.md)."""

from rec.federated.federate import FED_METHODS, FedResult, check_fed_config, federated_adapt, publish_federated

__all__ = ["FED_METHODS", "FedResult", "check_fed_config", "federated_adapt", "publish_federated"]
