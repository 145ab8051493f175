"""Prefix caching: share the KV pages of common prompt prefixes between requests.

``make_prefix_cache(mode, allocator, block_size)`` builds the cache for
``EngineConfig.prefix_caching``: ``"hash"`` (:class:`HashPrefixCache`, vLLM /
nano-vLLM block hashing), ``"radix"`` (:class:`RadixPrefixCache`, SGLang's
RadixAttention) or ``"none"`` (returns None: every prompt is computed in full).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import PrefixCachingMode
from .base import PrefixCache
from .hash_cache import HashPrefixCache
from .radix_cache import RadixPrefixCache
from .radix_tree import RadixNode, RadixTree

if TYPE_CHECKING:
    from ..block_allocator import BlockAllocator

PREFIX_CACHES = {"hash": HashPrefixCache, "radix": RadixPrefixCache}


def make_prefix_cache(mode: PrefixCachingMode, allocator: BlockAllocator, block_size: int) -> PrefixCache | None:
    """The prefix cache for ``mode`` ("none" | "hash" | "radix"). Raises ValueError otherwise."""
    if mode == "none":
        return None
    if mode not in PREFIX_CACHES:
        raise ValueError(f"prefix_caching={mode!r} is unknown; choose 'none', 'hash' or 'radix'")
    return PREFIX_CACHES[mode](allocator, block_size)


__all__ = ["PrefixCache", "HashPrefixCache", "RadixPrefixCache", "RadixTree", "RadixNode", "make_prefix_cache"]
