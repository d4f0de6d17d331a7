import pytest

from tests.hubprocess import resolve_localhost, start_hub

# users' servers and services live on *.localhost origins, which browsers resolve by themselves
resolve_localhost()


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
