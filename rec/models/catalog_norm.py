"""Per-catalog normalisation of item text vectors, computed from the catalog itself.

Sentence-encoder vectors of one catalog share a large common direction (all titles of a shop are
"product titles" first) and a few dominant ones, so raw dot products between them are high for
every pair and the item-to-item differences a ranking needs sit in a thin shell (Su et al.,
"Whitening Sentence Representations for Better Semantics and Faster Retrieval", 2021; UniSRec's
parametric whitening, Hou et al., KDD 2022, learns the same correction from source data). The
statistics here come from the target catalog alone, so they exist before any interaction: a
zero-shot tenant gets them too.

Applied by ``Backbone.item_representations`` before the item-text adaptor, so training, zero-shot
scoring, the export of a tenant's catalog matrix and every parity check run this one function on
the tenant's whole catalog (its rows are the catalog; a subset would get other statistics).
"""

from __future__ import annotations

import torch

__all__ = ["CATALOG_NORMS", "normalize_catalog_text"]

#: ``none``: raw vectors; ``center``: minus the catalog mean; ``whiten``: centred, then ZCA-whitened
CATALOG_NORMS = ("none", "center", "whiten")
#: whitening shrinkage: eigenvalues get ``+ WHITEN_EPS * mean eigenvalue`` (a catalog of fewer items
#: than text dimensions has a singular covariance, and the smallest directions are mostly noise)
WHITEN_EPS = 0.1


def normalize_catalog_text(text: torch.Tensor, mode: str) -> torch.Tensor:
    """``(N, text_dim)`` item text vectors of one whole catalog -> the same shape, normalised.

    ``center`` subtracts the catalog mean. ``whiten`` then multiplies by ``C^{-1/2}`` (ZCA: it keeps
    the text space's axes, which a pretrained adaptor reads) with ``C`` the centred covariance
    shrunk by ``WHITEN_EPS``, and divides by ``sqrt(text_dim)`` so the vectors keep about the unit
    norm of the encoder's own.

    Raises:
        ValueError: Unknown ``mode``.
    """
    if mode == "none":
        return text
    if mode not in CATALOG_NORMS:
        raise ValueError(f"catalog normalisation {mode!r}: choose one of {list(CATALOG_NORMS)}")
    x = text - text.mean(dim=0, keepdim=True)
    if mode == "center":
        return x
    xd = x.double()
    cov = xd.T @ xd / max(x.shape[0], 1)  # (text_dim, text_dim)
    evals, evecs = torch.linalg.eigh(cov)
    evals = evals.clamp(min=0.0)
    shrink = WHITEN_EPS * float(evals.mean()) + 1e-12
    w = (evecs * (evals + shrink).rsqrt()) @ evecs.T / (x.shape[1] ** 0.5)
    return x @ w.to(x.dtype)
