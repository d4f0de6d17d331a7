"""Kernel-side helpers: the platform environment as seen from inside a notebook kernel."""
