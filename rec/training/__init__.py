"""Pretraining: corpus building, the pure training loop, the one Ray Train scaffold, checkpoints."""

from rec.training.checkpoint import LoadedBackbone, export_backbone, load_backbone
from rec.training.corpus import Corpus, TenantCorpus, build_corpus, load_tenants
from rec.training.early_stopping import EarlyStopping
from rec.training.ray_train import PretrainResult, pretrain, pretrained_backbone

__all__ = [
    "Corpus",
    "EarlyStopping",
    "LoadedBackbone",
    "PretrainResult",
    "TenantCorpus",
    "build_corpus",
    "export_backbone",
    "load_backbone",
    "load_tenants",
    "pretrain",
    "pretrained_backbone",
]
