"""Models: the text-based sequential backbone (ID-only SASRec is the same class without text)."""

from rec.models.backbone import Backbone, TextAdaptor, build_backbone

__all__ = ["Backbone", "TextAdaptor", "build_backbone"]
