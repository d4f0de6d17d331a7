import pytest

from tests.hubprocess import start_hub


@pytest.fixture
def hub_factory(tmp_path):
    """Start real hubs for a test (``hub_factory(settings)``); all are stopped afterwards."""
    hubs = []

    def factory(settings=None, data_dir=None, **kw):
        hub = start_hub(data_dir or tmp_path / f"hub{len(hubs)}", settings, **kw)
        hubs.append(hub)
        return hub

    yield factory
    for hub in hubs:
        hub.stop()
