"""A warm spare of ``mlflow server``: the same command, with MLflow's CLI already imported.

Started by the mlflow service while its server runs, it imports ``mlflow.cli`` (~4.7 s on a
2-core machine) and waits for one line on stdin. ``go`` runs ``mlflow server <its arguments>`` in this very process, which then is
the server the service supervises (a process group of its own, as a cold start is); anything
else, or stdin closing, ends it. It names itself ``hubml-mlspare`` while it waits and
``hubml-mlflow`` once it serves, so operators (and tests) can tell the two apart.

Measured (``python -m benchmarks faults``): back after a kill in a median 9.8 s instead of
11.3 s. What remains is ``mlflow server``'s own work after the CLI: its store check and its
uvicorn worker, a second process that imports MLflow again (~5 s).
"""

from __future__ import annotations

import contextlib
import ctypes
import sys

PR_SET_NAME = 15
WAITING, SERVING = b"hubml-mlspare", b"hubml-mlflow"


def _name(name: bytes) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)


def main(argv: list[str]) -> int:
    _name(WAITING)
    import mlflow.cli  # the slow part, done before anybody waits for it

    if sys.stdin.readline().strip() != "go":
        return 0
    _name(SERVING)
    # ``mlflow <argv>`` as the command line would run it (click exits with the server)
    return mlflow.cli.cli.main(args=argv, prog_name="mlflow", standalone_mode=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
