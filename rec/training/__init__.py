"""Pretraining: corpus building, the pure training loop, Ray Train entry point, checkpoints."""

from rec.training.checkpoint import LoadedBackbone, export_backbone, load_backbone
from rec.training.corpus import Corpus, TenantCorpus, build_corpus, load_tenants
from rec.training.ray_train import PretrainResult, pretrain

__all__ = [
    "Corpus",
    "LoadedBackbone",
    "PretrainResult",
    "TenantCorpus",
    "build_corpus",
    "export_backbone",
    "load_backbone",
    "load_tenants",
    "pretrain",
]
