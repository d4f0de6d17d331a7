"""Opening the hub must stay fast: hubml's hub side never imports the heavy ML libraries."""

import json
import subprocess
import sys

HEAVY = [
    "mlflow",
    "gradio",
    "pandas",
    "papermill",
    "kubernetes",
    "kubernetes_asyncio",
    "kubespawner",
    "feast",
    "pyarrow",
]


def modules_after(statement: str) -> set[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return {m.split(".")[0] for m in json.loads(out)}


def test_hub_config_and_its_local_path_import_no_heavy_library():
    loaded = modules_after(
        "import hubml.hub_config, hubml.hub_config.configurer, hubml.hub_config.settings, "
        "hubml.hub_config.spawners.local, hubml.hub_config.cli, hubml.hub_config.policy"
    )
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_loading_config_for_the_local_spawner_imports_no_heavy_library(tmp_path):
    loaded = modules_after(
        "from traitlets.config import Config; from hubml.hub_config import configure; "
        f"c = Config(); configure(c, environ={{'HUBML_DATA_DIR': {str(tmp_path)!r}}})"
    )
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_widgets_import_no_heavy_library():
    loaded = modules_after("import hubml.widgets")
    assert not loaded & set(HEAVY)
    # the FeatureBrowser needs only ipywidgets (Feast: feature_store(), when a notebook asks)
    loaded = modules_after("from hubml.widgets import FeatureBrowser")
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_an_mlflow_call_does_not_import_feast():
    """Feast's MLflow request-header plugin (which imports all of Feast, ~3 s, into every process
    calling MLflow) is unregistered at install (hub_config/plugins.py)."""
    from importlib import metadata

    providers = metadata.entry_points(group="mlflow.request_header_provider")
    assert "feast" not in {ep.name for ep in providers}
    loaded = modules_after(
        "import os; os.environ['MLFLOW_HTTP_REQUEST_MAX_RETRIES'] = '0'\n"
        "from mlflow import MlflowClient\n"
        "try:\n    MlflowClient('http://127.0.0.1:9').search_experiments()\n"
        "except Exception:\n    pass"
    )
    assert "mlflow" in loaded and "feast" not in loaded
