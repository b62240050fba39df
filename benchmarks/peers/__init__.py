"""Peers the benchmarks measure beside mgecache, each in a benchmark-only virtualenv (never a project dependency)."""
