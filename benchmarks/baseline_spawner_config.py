# Baseline for benchmarks/spawn.py: hubml's hub configuration with JupyterHub's own
# SimpleLocalProcessSpawner in place of hubml's, so the comparison isolates the spawner.
from hubml.hub_config import configure

configure(c)  # noqa: F821
c.JupyterHub.spawner_class = "jupyterhub.spawner.SimpleLocalProcessSpawner"  # noqa: F821
c.SimpleLocalProcessSpawner.home_dir_template = c.HubmlLocalSpawner.home_dir_template  # noqa: F821
c.Spawner.options_form = ""  # noqa: F821
