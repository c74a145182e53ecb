"""Reclaim and swap: LRU lists, swap areas, zswap, kswapd and direct reclaim, OOM, PSI."""
