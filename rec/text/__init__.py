"""Item-text embeddings: a pretrained sentence encoder (all-MiniLM-L6-v2 by default) and its disk cache.

Example::

    from rec.config import TextConfig
    from rec.text import encode_items

    emb = encode_items(["red running shoes", "stainless steel saucepan"], TextConfig())  # (2, 384)
"""

from rec.text.cache import encode_cached, encode_items, get_encoder
from rec.text.encoder import TextEncoder

__all__ = ["TextEncoder", "encode_cached", "encode_items", "get_encoder"]
