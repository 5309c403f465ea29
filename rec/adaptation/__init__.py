"""Few-shot adaptation of a pretrained backbone to new tenants."""
