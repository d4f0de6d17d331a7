"""Third-party plugins hubml unregisters after installing: ``python -m hubml.hub_config.plugins``.

Feast 0.67 registers an MLflow request-header provider (``mlflow.request_header_provider``:
``feast``) for its own MLflow data sources, which hubml does not use. MLflow loads every such
provider on a process's first REST call, and loading this one imports all of Feast: about 3 s
more for every kernel, job run and service that talks to MLflow, Feast or not. Unregistering it
(its line in Feast's ``entry_points.txt``) keeps Feast's import where it is used. ``make install``
and the images run this after ``pip install``; it is idempotent.
"""

from __future__ import annotations

import sys
from importlib import metadata

# (distribution, entry-point group, entry-point name)
UNWANTED = [("feast", "mlflow.request_header_provider", "feast")]


def unregister(dist_name: str, group: str, name: str) -> bool:
    """Drop one entry point from an installed distribution's metadata; True when it was there."""
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        return False
    files = [f for f in dist.files or [] if f.name == "entry_points.txt"]
    if not files:
        return False
    path = dist.locate_file(files[0])
    try:
        lines = path.read_text().splitlines(keepends=True)
    except OSError:
        return False
    out, section, dropped = [], "", False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1]
        elif section == group and stripped.split("=", 1)[0].strip() == name:
            dropped = True
            continue
        out.append(line)
    if dropped:
        path.write_text("".join(out))
    return dropped


def main() -> int:
    for dist, group, name in UNWANTED:
        if unregister(dist, group, name):
            print(
                f"hubml: unregistered {dist}'s {group} plugin {name!r} (see hubml.hub_config.plugins)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
