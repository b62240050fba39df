"""Adapters that plug mgecache into other frameworks. Each needs its own optional extra."""
