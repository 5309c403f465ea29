"""The shared serving graph: one base backbone, per-row tenant adapters as graph inputs.

Every tenant is served by the same ONNX model. What makes a row "tenant X" is fed with the row:

- ``hist [B,T,D]``: the user's history as rows of the tenant's catalog matrix (item vectors after
  the tenant's adaptor, see :mod:`rec.export.tenant_bundle`), left-padded; ``pad [B,T]`` bool,
  True at padding.
- ``prompt [B,P,D]`` / ``prompt_pad [B,P]``: prompt-tuning prefix vectors; slots a row does not use
  are marked True in ``prompt_pad`` and masked exactly like history padding, so a row without a
  prompt attends to nothing extra and equals the base model.
- for every adaptable projection ``<name>`` (``blocks.<i>.attn.{q,k,v,o}_proj``,
  ``blocks.<i>.ffn.fc{1,2}``, in :func:`adapted_projections` order): ``lora_a.<name> [B,r,in]`` and
  ``lora_b.<name> [B,out,r]`` with the LoRA scaling already folded into B. The projection computes
  ``x W^T + b + (x A^T) B^T`` per row with two batched matmuls. Rows without LoRA feed zeros: the
  added term is exactly 0.0, so a zero adapter gives the base model bit for bit; a rank smaller
  than the batch's is zero-padded, which is also exact.

Output ``user [B,D]`` is the state after the last item divided by the backbone's temperature, so
``scores = user @ catalog.T`` on the tenant's catalog matrix. The graph computes what that needs
and no more (``Backbone.encode(..., last_only=True)``): the last block runs its query, output
projection and FFN for the last position only (keys and values for all), and attention uses an
additive float mask, which exports without the NaN guard of boolean-mask SDPA; equal to the full
encoder's last row up to float rounding (~1e-7).

The text adaptor's LoRA (``adaptor.proj``) is not a graph input: it changes item vectors, not the
user encoder, so it is baked into the tenant's catalog matrix once per item.

:class:`BaseGraph` is the same model for batches where no row has an adapter tensor (zero-shot and
head tenants): inputs ``hist`` and ``pad`` only, so none of the per-row LoRA matmuls and adds run.
Its projections run as 2-D matmuls over ``B*T`` rows (ONNX ``Gemm``, bias fused in; ONNX Runtime
fuses a bias only into a 2-D ``MatMul``), and attention runs one head at a time on per-head
projections (:class:`_HeadwiseAttention`: no head transposes). Measured at batch 32
(bench/README.md, compression): the base graph's model call takes ~0.7x the time of the per-row
LoRA graph's. ``rec export --int8`` quantizes it too (``model.base.int8.onnx``: the quantizer
turns each ``Gemm`` into an int8 matmul).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from rec.adaptation.methods.lora import ENCODER_TARGETS
from rec.models.backbone import Backbone
from rec.models.layers import CausalSelfAttention, additive_mask_attention, attention_bias
from rec.serving.runtime import BASE_INPUTS

__all__ = ["ServingGraph", "BaseGraph", "MergedGraph", "adapted_projections", "input_names", "OUTPUT_NAME"]

OUTPUT_NAME = "user"


def adapted_projections(backbone: Backbone) -> list[tuple[str, int, int]]:
    """``(name, in_features, out_features)`` of every encoder ``nn.Linear`` LoRA may target, in order."""
    out = []
    for name, mod in backbone.blocks.named_modules(prefix="blocks"):
        if isinstance(mod, nn.Linear) and name.rsplit(".", 1)[-1] in ENCODER_TARGETS:
            out.append((name, mod.in_features, mod.out_features))
    return out


def input_names(projections: list[tuple[str, int, int]]) -> list[str]:
    """The graph's input names in feed order."""
    names = ["hist", "pad", "prompt", "prompt_pad"]
    for name, _, _ in projections:
        names += [f"lora_a.{name}", f"lora_b.{name}"]
    return names


class _RowLoRALinear(nn.Module):
    """``base(x) + (x A^T) B^T`` with per-row ``A [B,r,in]``, ``B [B,out,r]`` set just before forward."""

    def __init__(self, base: nn.Linear) -> None:
        super().__init__()
        self.base = base
        self.ab: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.ab is not None:
            a, b = self.ab
            y = y + torch.bmm(torch.bmm(x, a.transpose(1, 2)), b.transpose(1, 2))
        return y


class ServingGraph(nn.Module):
    """The shared multi-tenant graph (see module doc). Holds a private copy of the backbone.

    ``forward(hist, pad, prompt, prompt_pad, *lora)`` where ``lora`` alternates A and B for each
    projection of :attr:`projections`.
    """

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        bb = copy.deepcopy(backbone).eval()
        bb.prompt = None  # prompts are per-row inputs here
        bb.adaptor = None  # item side lives in the tenant's catalog matrix: keep it out of the graph
        bb.id_emb = None
        self.projections = adapted_projections(bb)
        self._wrappers: list[_RowLoRALinear] = []
        for name, _, _ in self.projections:
            parent_name, attr = name.rsplit(".", 1)
            parent = bb.get_submodule(parent_name)
            w = _RowLoRALinear(getattr(parent, attr))
            setattr(parent, attr, w)
            self._wrappers.append(w)
        self.backbone = bb
        self.temperature = float(bb.temperature)

    @property
    def input_names(self) -> list[str]:
        return input_names(self.projections)

    def forward(
        self, hist: torch.Tensor, pad: torch.Tensor, prompt: torch.Tensor, prompt_pad: torch.Tensor, *lora: torch.Tensor
    ) -> torch.Tensor:
        if len(lora) != 2 * len(self._wrappers):
            raise ValueError(f"expected {2 * len(self._wrappers)} LoRA tensors (A and B per projection), got {len(lora)}")
        for i, w in enumerate(self._wrappers):
            w.ab = (lora[2 * i], lora[2 * i + 1])
        try:
            hidden = self.backbone.encode(hist, pad, prompt, prompt_pad, last_only=True)
        finally:
            for w in self._wrappers:
                w.ab = None
        return hidden[:, -1, :] / self.temperature


class _Linear2d(nn.Module):
    """``nn.Linear`` over ``x.reshape(-1, in)``: exports as one ``Gemm`` with the bias fused in."""

    def __init__(self, base: nn.Linear) -> None:
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.linear(x.reshape(-1, x.shape[-1]), self.base.weight, self.base.bias)
        return y.reshape(*x.shape[:-1], y.shape[-1])


def _linear_part(base: nn.Linear, rows: slice = slice(None), cols: slice = slice(None), bias: bool = True) -> _Linear2d:
    """A 2-D ``Linear`` holding a copy of ``base.weight[rows, cols]`` (and ``base.bias[rows]``)."""
    w = base.weight.detach()[rows, cols]
    out = nn.Linear(w.shape[1], w.shape[0], bias=bias)
    with torch.no_grad():
        out.weight.copy_(w)
        if bias:
            out.bias.copy_(base.bias.detach()[rows])
    return _Linear2d(out)


class _HeadwiseAttention(nn.Module):
    """:class:`CausalSelfAttention` (inference, additive mask) with one projection per head.

    The query/key/value weights are split by output rows and ``o_proj`` by input columns, so head
    ``i`` attends on ``[B, T, D/h]`` tensors and adds its own ``o_proj`` slice's output: the same
    sum ``o_proj`` takes over the concatenated heads, without the head split and merge
    transposes (8 ``Transpose`` copies per call, ~10 % of the base graph's ONNX Runtime time at
    batch 32). Attention itself is :func:`additive_mask_attention`, as in the encoder.
    """

    def __init__(self, attn: CausalSelfAttention) -> None:
        super().__init__()
        d = attn.q_proj.in_features
        dh = d // attn.n_heads
        heads = [slice(i * dh, (i + 1) * dh) for i in range(attn.n_heads)]
        self.q, self.k, self.v = (nn.ModuleList(_linear_part(p, rows=s) for s in heads)
                                  for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        self.o = nn.ModuleList(_linear_part(attn.o_proj, cols=s, bias=i == 0) for i, s in enumerate(heads))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        if mask.dtype == torch.bool:
            mask = attention_bias(mask, x.dtype)
        xq = x[:, -1:] if last_only else x
        bias = mask[:, 0, -1:] if last_only else mask[:, 0]  # (B, S, T): one mask for every head
        out = None
        for q, k, v, o in zip(self.q, self.k, self.v, self.o):
            y = o(additive_mask_attention(q(xq), k(x), v(x), bias))
            out = y if out is None else out + y
        return out


class BaseGraph(nn.Module):
    """The serving graph without adapter inputs: ``forward(hist, pad) -> user`` (see module doc).

    Equal to :class:`ServingGraph` with zero LoRA tensors and no prompt, up to float rounding.
    """

    input_names = list(BASE_INPUTS)

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        bb = copy.deepcopy(backbone).eval()
        bb.prompt = bb.adaptor = bb.id_emb = None
        for block in bb.blocks:
            block.attn = _HeadwiseAttention(block.attn)
            block.ffn.fc1, block.ffn.fc2 = _Linear2d(block.ffn.fc1), _Linear2d(block.ffn.fc2)
        self.backbone = bb
        self.temperature = float(bb.temperature)

    def forward(self, hist: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode(hist, pad, last_only=True)[:, -1, :] / self.temperature


class MergedGraph(nn.Module):
    """The classic per-tenant model: one tenant's merged backbone with its catalog baked in.

    ``forward(items [B,T] int64 catalog rows, pad [B,T] bool) -> scores [B,N]``. Prompt vectors
    (``backbone.prompt``) and merged LoRA weights are constants of the graph.
    """

    def __init__(self, backbone: Backbone, catalog: torch.Tensor) -> None:
        super().__init__()
        self.backbone = copy.deepcopy(backbone).eval()
        self.register_buffer("catalog", catalog.detach().clone().float())

    def forward(self, items: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        hist = self.catalog[items.clamp(min=0)]
        user = self.backbone.encode(hist, pad, last_only=True)[:, -1, :]
        return self.backbone.scores(user, self.catalog)
