"""Few-shot adaptation of a pretrained backbone to new tenants.

- :mod:`rec.adaptation.registry`: the adaptation-method registry (one ``AdaptationMethod`` per
  module of :mod:`rec.adaptation.methods`); see docs/adaptation.md.
- :mod:`rec.adaptation.adapt`: the recipe (``adapt_tenant``, ``publish_adapter``).
- :mod:`rec.adaptation.prepare`: the method's trainable copy of the backbone.
- :mod:`rec.adaptation.artifacts`: versioned PEFT-format adapter folders.
- :mod:`rec.adaptation.meta`: Reptile meta-learned initialization.
"""
