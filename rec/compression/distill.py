"""Knowledge distillation of the encoder into a shallower student.

The student starts as a copy of the teacher with a subset of its transformer blocks (layer
dropping, as DistilBERT initialises from every other layer: Sanh et al., 2019) and learns from
the training targets and the teacher's softened scores over the whole catalog (Hinton et al.,
"Distilling the Knowledge in a Neural Network", 2015). Teacher and student share the item
adaptor (frozen), so every tenant's catalog matrix is unchanged.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from rec.models.backbone import Backbone
from rec.models.layers import CausalSelfAttention
from rec.training.batches import PAD
from rec.training.corpus import TenantCorpus
from rec.training.loop import catalog_representations

__all__ = ["make_student", "DistillLoss"]


def make_student(teacher: Backbone, keep_layers: list[int], dropout: float | None = None) -> Backbone:
    """A copy of ``teacher`` keeping only the blocks ``keep_layers`` (in that order).

    ``dropout`` (optional) sets every dropout rate of the student (embedding, residual, FFN and
    attention dropout); ``None`` keeps the teacher's. Distilling a 1-block student on ml-100k
    (943 training rows), dropout 0.2 pulled its NDCG@10 from the layer-dropped start down by ~25 %
    in the first epochs and it recovered to -10 % of the teacher after 12; at 0 it ended within
    2 % (bench/README.md, compression section).
    """
    n = len(teacher.blocks)
    if not keep_layers or any(not 0 <= i < n for i in keep_layers):
        raise ValueError(f"keep_layers must be a non-empty list of block indices in [0, {n}), got {keep_layers}")
    if dropout is not None and not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    student = copy.deepcopy(teacher)
    student.blocks = nn.ModuleList(copy.deepcopy(teacher.blocks[i]) for i in keep_layers)
    if dropout is not None:
        for m in student.modules():
            if isinstance(m, nn.Dropout):
                m.p = dropout
            elif isinstance(m, CausalSelfAttention):
                m.dropout = dropout
    return student


class DistillLoss(nn.Module):
    """``alpha * CE(student, target) + (1 - alpha) * tau^2 * KL(teacher_tau || student_tau)``.

    Same call signature as ``rec.training.loop.CorpusLoss``, so ``train_epoch`` runs it.
    """

    def __init__(self, student: Backbone, teacher: Backbone, alpha: float = 0.5, tau: float = 2.0) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0 or tau <= 0:
            raise ValueError(f"need 0 <= alpha <= 1 and tau > 0, got alpha={alpha}, tau={tau}")
        self.student, self.alpha, self.tau = student, alpha, tau
        self.teacher = [teacher.eval()]  # a list: not a submodule (no grads, not in parameters())

    def forward(
        self,
        tenant_idx: torch.Tensor,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        tenants: list[TenantCorpus],
        text_embs: list[torch.Tensor | None],
    ) -> torch.Tensor:
        teacher = self.teacher[0]
        total, count = inputs.new_zeros((), dtype=torch.float32), 0
        for t in torch.unique(tenant_idx).tolist():
            sel = tenant_idx == t
            idx, tgt = inputs[sel], targets[sel]
            keep = tgt >= 0
            n = int(keep.sum())
            if n == 0:
                continue
            catalog = catalog_representations(self.student, tenants[t], text_embs[t])  # (N, D), frozen adaptor
            hist, pad = catalog[idx.clamp(min=0)], idx == PAD
            s = self.student.scores(self.student.encode(hist, pad)[keep], catalog)  # (M, N)
            with torch.no_grad():
                tl = teacher.scores(teacher.encode(hist, pad)[keep], catalog)
            ce = F.cross_entropy(s, tgt[keep])
            kd = F.kl_div(F.log_softmax(s / self.tau, -1), F.log_softmax(tl / self.tau, -1), log_target=True, reduction="batchmean")
            loss = self.alpha * ce + (1 - self.alpha) * self.tau**2 * kd
            total, count = total + loss * n, count + n
        return total / max(count, 1)
