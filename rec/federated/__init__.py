"""Federated adaptation of a tenant's adapter (Flower on Ray) and its differential privacy."""
