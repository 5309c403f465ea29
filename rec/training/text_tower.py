"""Pretraining with LoRA on the item-text encoder: every source catalog's text through one shared tower.

The other pretraining objectives read each source's item vectors from a fixed matrix (the frozen
MiniLM's). Here the text encoder itself learns (issue 17 item 4; Recformer, Li et al., KDD 2023,
and NineRec train the language model with the recommendation loss): a :class:`TowerText` stands
where a tenant's text matrix stood, and hands out the vectors of the items a batch touches,
re-encoded by the shared :class:`~rec.text.lora_tower.LoraTower` from cached token states
(``rec.text.token_states``), with gradients into the LoRA weights.

Only in-batch objectives can use it (``model.loss=infonce``, ``rec.training.infonce``): a step
re-encodes the items its rows touch, never a whole catalog, so no candidate is scored with stale
weights and the cost follows the batch, not the catalog sizes. :func:`preserve_regularizer` adds
the text-preserving term over the items re-encoded in the step. After training,
:meth:`TowerText.encode_all` gives a catalog's tuned vectors (evaluation), and
:func:`rec.text.lora_tower.save_tuned_encoder` writes the merged encoder that later steps load as
``text.model``: zero-shot, adaptation and serving then need no change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from rec.text.lora_tower import LoraTower, preserve_term
from rec.text.token_states import TokenStates

__all__ = ["TowerText", "text_rows", "catalog_matrices", "preserve_regularizer"]

#: items encoded together in one tower call; a batch's items are grouped by token count to pad little
CHUNK = 256


@dataclass
class TowerText:
    """One catalog's item text, encoded on demand by the shared tower.

    Attributes:
        tower: The LoRA tower (shared by every catalog of a run).
        states: The catalog's token states at the tower's cut.
        last: ``(item indices, their new vectors)`` of the last :meth:`rows` call made with
            gradients on, for the text-preserving term; cleared by :func:`preserve_regularizer`.
    """

    tower: LoraTower
    states: TokenStates
    last: tuple[torch.Tensor, torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if self.states.cut != self.tower.cut:
            raise ValueError(f"token states cut at layer {self.states.cut}, the tower starts at layer {self.tower.cut}: "
                             "build the states with the tower's cut")

    @property
    def shape(self) -> tuple[int, int]:
        return self.states.frozen.shape  # type: ignore[return-value]

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """Unit vectors ``(A, H)`` of items ``idx (A,)`` through the tower (gradients flow when enabled)."""
        idx = idx.cpu()
        order = torch.argsort(self.states.lengths[idx], descending=True, stable=True)
        parts = [self.tower(*self.states.batch(idx[order[s : s + CHUNK]])) for s in range(0, len(idx), CHUNK)]
        out = torch.empty(len(idx), self.shape[1]).index_put((order,), torch.cat(parts)) if parts else torch.zeros(0, self.shape[1])
        if torch.is_grad_enabled():
            self.last = (idx, out)
        return out

    @torch.no_grad()
    def encode_all(self) -> torch.Tensor:
        """The whole catalog ``(N, H)`` with the tower's current weights."""
        return self.tower.encode_all(self.states)


def text_rows(emb: torch.Tensor | TowerText, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Rows ``idx`` of a tenant's item text on ``device``: a matrix's rows, or a tower's re-encoding."""
    if isinstance(emb, TowerText):
        return emb.rows(idx).to(device)
    return emb.to(device)[idx]


def catalog_matrices(embs: list, device: torch.device | str | None = None) -> list[torch.Tensor | None]:
    """Each tenant's whole text matrix for evaluation: a tower's current re-encoding (``encode_all``) on
    ``device``, or the matrix (or None) as it is."""
    return [e.encode_all().to(device) if isinstance(e, TowerText) else e for e in embs]


def preserve_regularizer(texts: list, weight: float) -> Callable[[], torch.Tensor]:
    """A ``train_epoch`` regularizer: :func:`~rec.text.lora_tower.preserve_term` over every item the
    step re-encoded (all catalogs together), then forget them."""

    def term() -> torch.Tensor:
        touched = [t for t in texts if isinstance(t, TowerText) and t.last is not None]
        if weight == 0.0 or not touched:
            return torch.zeros(())
        new = torch.cat([t.last[1] for t in touched])
        frozen = torch.cat([t.states.frozen[t.last[0]] for t in touched])
        for t in touched:
            t.last = None
        return preserve_term(new, frozen, weight)

    return term
