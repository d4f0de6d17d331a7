# Baseline for benchmarks/spawn.py: hubml's hub configuration with JupyterHub's own
# SimpleLocalProcessSpawner in place of hubml's, so the comparison isolates the spawner.
from hubml.hub_config import configure

configure(c)  # noqa: F821
c.JupyterHub.spawner_class = "jupyterhub.spawner.SimpleLocalProcessSpawner"  # noqa: F821
c.SimpleLocalProcessSpawner.home_dir_template = c.HubmlLocalSpawner.home_dir_template  # noqa: F821
c.Spawner.options_form = ""  # noqa: F821
# JupyterHub's spawner runs every server as the hub's user (root here), which Jupyter refuses
# without --allow-root; hubml's runs each as its own account (see docs/ARCHITECTURE.md)
import os  # noqa: E402

if os.geteuid() == 0 and "--allow-root" not in c.Spawner.args:  # noqa: F821
    c.Spawner.args = [*c.Spawner.args, "--allow-root"]  # noqa: F821
