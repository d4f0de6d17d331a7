# hubml's JupyterHub configuration. Thin on purpose: settings live in hub_config/defaults.yaml,
# hub_config/catalog.yaml, the YAML file named by HUBML_SETTINGS and HUBML_* variables.
from hubml.hub_config import configure

configure(c)  # noqa: F821 (c is provided by JupyterHub)
