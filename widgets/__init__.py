"""hubml notebook widgets. Importing this package is cheap: each panel loads on first use.

>>> from hubml.widgets import ExperimentPanel
"""

_LAZY = {
    "ExperimentPanel": "hubml.widgets.tracking",
    "PublishPanel": "hubml.widgets.publish",
    "SchedulePanel": "hubml.widgets.jobs",
    "AppsPanel": "hubml.widgets.apps",
    "try_app": "hubml.widgets.apps",
    "cost": "hubml.widgets.cost",
    "FeatureBrowser": "hubml.widgets.features",
    "feature_store": "hubml.widgets.features",
    "propose_features": "hubml.widgets.features",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hubml.widgets' has no attribute {name!r}")


__all__ = list(_LAZY)
