"""hubml hub configuration: settings, the compute catalog, spawners, auth and services.

Importing this package stays cheap (no mlflow, gradio, pandas, papermill or kubernetes): the hub
imports it at start.
"""

from .yamlsource import SettingsError

__all__ = ["SettingsError", "configure"]


def configure(c, settings_file=None, environ=None) -> None:
    """Load settings (defaults < HUBML_SETTINGS file < environment), make the machine ready
    (accounts and the data dir's modes, when the hub is root) and apply them to ``c``.

    Bad settings stop the process with one line on stderr naming the file, key and what is
    allowed, and exit status 2.
    """
    import os
    import sys

    from .configurer import apply_settings, leave_nothing_if_start_fails, prepare_host, running_hub
    from .settings import load_settings
    from .topology import in_cluster

    try:
        settings = load_settings(settings_file, environ)
    except SettingsError as e:
        print(f"hubml: invalid settings: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    other = None if in_cluster(settings) else running_hub(settings)
    if other is not None:
        print(
            f"hubml: a hub is already running on {settings.data_dir} (pid {other}); a second one "
            f"would take its proxy and services away. Stop it first (kill {other}), or give "
            "this one another hub.data_dir.",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(2)
    prepare_host(settings)
    apply_settings(c, settings)
    import logging

    from .spawners.base import quiet_refusals

    quiet_refusals(logging.getLogger("JupyterHub"))
    if (environ if environ is not None else os.environ).get("HUBML_ANNOUNCE_READY"):
        from .topology import announce_when_ready

        announce_when_ready(settings)
    if not in_cluster(settings):
        leave_nothing_if_start_fails(settings)
