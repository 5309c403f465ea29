"""The re-adaptation validation gate: the most recent logged events, held out, decide.

:func:`split_logged` maps logged item ids onto the tenant's catalog (unknown ids are dropped and
counted), then holds out one event of each of the ``holdout_users`` users who acted last: the
newest interaction an ask reported (``history_last``: what the user did, shown or not), else the
newest event. Their earlier events are the history; that event and any later click never train.
Targets are not taken among trailing clicks: a click is on an item the serving version chose to
show, so such targets favour the serving version over a candidate (seen in the closed-loop replay:
the same zero-shot model scored 0.025 to 0.1 on the gates of three tenants that differed only in
which items had been clicked). Everything else,
including the held-out users' histories, is training data. :func:`gate_ndcg` scores a model on
those examples (full ranking over the catalog, NDCG@10); the serving version and the candidate
are both loaded from their adapter folders and go through this one function.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rec.data.schema import DataError, Tenant
from rec.feedback.log_reader import LoggedInteractions

__all__ = ["GATE_METRIC", "GateSet", "LoggedSplit", "TooFewUsers", "gate_ndcg", "gate_ranks", "split_logged"]

GATE_METRIC = "ndcg@10"


class TooFewUsers(DataError):
    """Not enough logged users to hold some out and still train."""


@dataclass(frozen=True)
class GateSet:
    """Held-out recent events: ``histories[i]`` (dense indices, oldest first) -> ``targets[i]``."""

    users: np.ndarray
    histories: list[np.ndarray]
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)


@dataclass(frozen=True)
class LoggedSplit:
    """The logged users as training data plus the gate set.

    Attributes:
        train: The tenant's catalog with the logged users' sequences minus the held-out events.
        gate: The held-out most recent events.
        events_used: Interactions mapped to the catalog (training + held out).
        dropped_unknown: Interactions whose item id is not in the catalog.
    """

    train: Tenant
    gate: GateSet
    events_used: int
    dropped_unknown: int


def _map_to_catalog(catalog: Tenant, logged: LoggedInteractions) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], int]:
    seqs, times, reported, dropped = [], [], [], 0
    flags = logged.reported or [[False] * len(s) for s in logged.sequences]
    for items, ts, rep in zip(logged.sequences, logged.times, flags):
        idx = [catalog.item_index_of(i) for i in items]
        keep = [k for k, v in enumerate(idx) if v is not None]
        dropped += len(idx) - len(keep)
        seqs.append(np.asarray([idx[k] for k in keep], np.int64))
        times.append(np.asarray([ts[k] for k in keep], np.float64))
        reported.append(np.asarray([rep[k] for k in keep], bool))
    return seqs, times, reported, dropped


def _gate_cut(reported: np.ndarray) -> int:
    """Index of a held-out user's gate target: the newest interaction an ask reported (after at
    least one earlier event), else the newest. A click alone is on an item the serving model
    chose to show, so a target picked among trailing clicks would favour the serving version."""
    asked = np.flatnonzero(reported[1:]) + 1
    return int(asked[-1]) if len(asked) else len(reported) - 1


def split_logged(catalog: Tenant, logged: LoggedInteractions, holdout_users: int, min_train_users: int) -> LoggedSplit:
    """Training tenant + gate set from the logged interactions (module doc).

    Args:
        catalog: The tenant as configured (its items define the catalog rows).
        logged: ``read_interactions`` of the tenant's log.
        holdout_users: Users whose most recent event is held out (those with the latest events).
        min_train_users: Users with >= 2 events needed besides the held-out ones.

    Raises:
        TooFewUsers: fewer than ``holdout_users + min_train_users`` users with >= 2 known events.
    """
    seqs, times, reported, dropped = _map_to_catalog(catalog, logged)
    usable = [u for u, s in enumerate(seqs) if len(s) >= 2]
    if len(usable) < holdout_users + min_train_users:
        raise TooFewUsers(
            f"tenant {catalog.name!r}: {len(usable)} logged users have >= 2 events on catalog items "
            f"({logged.num_users} users, {dropped} events on unknown items dropped); re-adaptation needs "
            f"{holdout_users + min_train_users} (feedback.readapt.holdout_users + min_train_users): wait for more events"
        )
    cut = {u: _gate_cut(reported[u]) for u in usable}
    last = np.array([times[u][cut[u]] for u in usable])
    gate_users = [usable[i] for i in np.argsort(-last, kind="stable")[:holdout_users]]
    gate = GateSet(users=logged.users[gate_users], histories=[seqs[u][:cut[u]] for u in gate_users],
                   targets=np.array([seqs[u][cut[u]] for u in gate_users], np.int64))
    held = set(gate_users)  # their target and anything after it never trains
    train_seqs_all = [seqs[u][:cut[u]] if u in held else seqs[u] for u in range(len(seqs))]
    train_rows = [u for u in range(len(seqs)) if len(train_seqs_all[u]) >= 1]
    train_seqs = [train_seqs_all[u] for u in train_rows]
    train_times = [times[u][: len(s)] for u, s in zip(train_rows, train_seqs)]
    train = Tenant.from_sequences(catalog.name, catalog.items.ids, catalog.items.text, logged.users[train_rows], train_seqs,
                                  [t.astype(np.int64) for t in train_times], source=f"event log of {catalog.name}")
    return LoggedSplit(train, gate, int(sum(len(s) for s in seqs)), dropped)


def gate_ranks(model, text_emb: np.ndarray, gate: GateSet, max_len: int, exclude_history: bool = False,
               batch_size: int = 256) -> np.ndarray:  # noqa: ANN001 - a Backbone (torch import deferred)
    """``(len(gate),)`` 0-based rank of each target under ``model`` (a scoring
    :class:`~rec.models.backbone.Backbone`), full ranking over the catalog ``text_emb (N, text_dim)``
    from the last ``max_len`` history items; ties count against the model."""
    import torch

    from rec.data.padding import PAD, left_pad
    from rec.metrics.ranking import rank_of_target

    model.eval()
    ranks = []
    with torch.no_grad():
        cat = model.item_representations(torch.from_numpy(np.require(text_emb, np.float32, ["C", "W"])))  # (N, D)
        for start in range(0, len(gate), batch_size):
            hist = [h[-max_len:] for h in gate.histories[start:start + batch_size]]
            idx = torch.from_numpy(np.asarray(left_pad(hist, max_len), np.int64))  # (B, T)
            scores = model.scores(model.user_vector(cat[idx.clamp(min=0)], idx == PAD), cat)  # (B, N)
            exclude = gate.histories[start:start + batch_size] if exclude_history else None  # all of it, not only the window
            # pessimistic ties: a model that scores everything alike must not pass the gate
            ranks.append(rank_of_target(scores.numpy(), gate.targets[start:start + batch_size], exclude=exclude,
                                        tie_policy="pessimistic"))
    return np.concatenate(ranks)


def gate_ndcg(model, text_emb: np.ndarray, gate: GateSet, max_len: int, exclude_history: bool = False,
              batch_size: int = 256) -> float:  # noqa: ANN001 - a Backbone (torch import deferred)
    """NDCG@10 of ``model`` on the gate set (:func:`gate_ranks`)."""
    from rec.metrics.ranking import ndcg_at_k

    return float(ndcg_at_k(gate_ranks(model, text_emb, gate, max_len, exclude_history, batch_size), 10))
