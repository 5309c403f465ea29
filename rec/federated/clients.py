"""Who the clients of a federated run are: the K training users, one each or grouped into silos.

``user`` (cross-device): every training user is a client holding its own sequence. ``silo``
(cross-silo): the users are dealt round-robin, in the split's seeded order, into ``num_silos``
shops that share the tenant's catalog; each shop holds its users' sequences. Pure numpy, no Flower.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["client_partitions", "clients_per_round"]


def client_partitions(num_users: int, mode: Literal["user", "silo"], num_silos: int = 4) -> list[np.ndarray]:
    """Row indices (into the K-shot training tenant) of each client's users.

    Raises:
        ValueError: No users, or fewer users than silos.
    """
    if num_users < 1:
        raise ValueError("the K-shot split has no training users: raise adapt.k_users")
    rows = np.arange(num_users, dtype=np.int64)
    if mode == "user":
        return [rows[i : i + 1] for i in range(num_users)]
    if num_users < num_silos:
        raise ValueError(f"{num_users} training users cannot fill fed.num_silos={num_silos} silos: lower fed.num_silos or raise adapt.k_users")
    return [rows[s::num_silos] for s in range(num_silos)]


def clients_per_round(num_clients: int, clients: int | None, fraction: float) -> int:
    """Clients sampled per round: ``clients`` if set, else ``fraction`` of them (at least 1).

    Raises:
        ValueError: ``clients`` exceeds the clients there are.
    """
    if clients is not None:
        if clients > num_clients:
            raise ValueError(f"fed.clients_per_round={clients} but there are only {num_clients} clients: lower it or raise adapt.k_users")
        return clients
    return max(1, int(round(num_clients * fraction)))
