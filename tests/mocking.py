"""Small stand-ins for JupyterHub objects, for tests of spawner logic without a running hub."""

from types import SimpleNamespace

from hubml.hub_config.settings import load_settings


class MockGroup(SimpleNamespace):
    pass


class MockUser:
    """Just what our spawners read from ``spawner.user``."""

    def __init__(self, name="alice", groups=()):
        self.name = name
        self.groups = [MockGroup(name=g) for g in groups]
        self.url = f"/user/{name}/"
        self.id = 1
        self.escaped_name = name
        self.server = None
        self.settings = {}

    @property
    def orm_user(self):
        return self


def default_catalog(tmp_path):
    settings = load_settings(None, environ={"HUBML_DATA_DIR": str(tmp_path)})
    return [p.model_dump(mode="json") for p in settings.profiles]


def local_spawner(tmp_path, user="alice", groups=(), inventory=(), **kw):
    from hubml.hub_config.spawners.local import HubmlLocalSpawner

    return HubmlLocalSpawner(
        user=MockUser(user, groups),
        catalog=default_catalog(tmp_path),
        gpu_inventory=[{"index": i, "model": m} for i, m in inventory],
        gpu_ledger_path=str(tmp_path / "gpu-ledger.json"),
        **kw,
    )
