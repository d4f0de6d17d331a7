"""A gate's pod on Kubernetes: fetch the candidate, probe it in a capped child, report back.

Started by :mod:`.gatekube` as ``python -m hubml.extensions.tracking.gatepod`` in a Job's pod
with two values: ``HUBML_GATE_URL`` (the mlflow service's ``hubml/gates/<id>/``) and
``HUBML_GATE_TOKEN`` (that gate's secret). It reads the probe's spec and the model archive,
unpacks the archive with tarfile's ``data`` filter (no links out of the folder, no devices, no
absolute paths), runs the same child as on one machine (:func:`.gatesandbox.run_child`: a
fresh ``python -I`` with a scrubbed environment, rlimits, its own session, killed at the
timeout) and sends how it went. The verdict is the service's.

Exit status 0 once a result was sent, 2 when the service could not be reached or refused.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

MAX_ARCHIVE_BYTES = 16 << 30
ATTEMPTS = 5


def _call(url: str, token: str, method: str = "GET", body: bytes | None = None, into=None):
    """One request to the service with the gate's secret, retried on connection errors."""
    headers = {"Authorization": f"hubml-gate {token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    for attempt in range(ATTEMPTS):
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                if into is None:
                    return response.read()
                total = 0
                while chunk := response.read(1 << 20):
                    total += len(chunk)
                    if total > MAX_ARCHIVE_BYTES:
                        raise SystemExit("the model archive is larger than a gate takes")
                    into.write(chunk)
                return b""
        except urllib.error.HTTPError as e:
            detail = e.read(2000).decode("utf-8", "replace")
            raise SystemExit(f"{method} {url}: {e.code} {detail}") from None
        except OSError as e:
            if attempt == ATTEMPTS - 1:
                raise SystemExit(f"{method} {url}: {e}") from None
            time.sleep(2**attempt)
    return b""


def unpack(archive: Path, dest: Path) -> None:
    """Unpack the service's archive of the model: files and folders only, every one inside
    ``dest`` (tarfile's own ``filter="data"`` needs Python 3.11.4, images may have older)."""
    import shutil

    dest.mkdir(mode=0o700)
    root = dest.resolve()
    with tarfile.open(archive) as tar:
        for member in tar:
            target = (dest / member.name).resolve()
            if (
                member.name.startswith("/")
                or ".." in Path(member.name).parts
                or (target != root and root not in target.parents)
            ):
                raise ValueError(
                    f"the model archive names a path outside its folder: {member.name!r}"
                )
            if member.isdir():
                target.mkdir(mode=0o700, parents=True, exist_ok=True)
            elif member.isfile():
                target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
            else:
                raise ValueError(
                    f"the model archive holds {member.name!r}, which is neither a file nor a folder"
                )


def main() -> int:
    from .gatesandbox import run_child

    base = os.environ.get("HUBML_GATE_URL", "")
    token = os.environ.pop("HUBML_GATE_TOKEN", "")
    if not base or not token:
        print("gatepod: HUBML_GATE_URL and HUBML_GATE_TOKEN are required", file=sys.stderr)
        return 2
    base = base if base.endswith("/") else base + "/"
    # the Job deleted (deadline, the service gave up): stop the child's group, then exit
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))
    try:
        spec = json.loads(_call(base + "spec", token))
        with tempfile.TemporaryDirectory(prefix="hubml-gate-pod-") as work:
            archive = Path(work, "model.tar")
            with open(archive, "wb") as f:
                _call(base + "model", token, into=f)
            unpack(archive, Path(work, "unpacked"))
            archive.unlink()
            run = run_child(
                str(Path(work, "unpacked", "model")),
                int(spec["trials"]),
                timeout_s=float(spec["timeout_s"]),
                memory_mb=int(spec["memory_mb"]),
                address_cap=bool(spec.get("address_cap", True)),
                gpu=bool(spec.get("gpu", False)),
            )
        report = {
            "messages": run.messages,
            "stderr": run.stderr.decode("utf-8", "replace"),
            "returncode": run.returncode,
            "timed_out": run.timed_out,
            "overflow": run.overflow,
            "wall_s": run.wall_s,
            "refused": run.refused,
        }
        _call(base + "result", token, "PUT", json.dumps(report).encode())
    except SystemExit as e:
        print(f"gatepod: {e}", file=sys.stderr)
        return 2
    except (tarfile.TarError, ValueError, KeyError, OSError) as e:
        # the model could not be unpacked or started: say so rather than exit without a word
        why = f"the gate's pod could not probe the model: {type(e).__name__}: {e}"
        print(f"gatepod: {why}", file=sys.stderr)
        report = {"messages": [], "stderr": "", "returncode": None, "refused": why[:500]}
        try:
            _call(base + "result", token, "PUT", json.dumps(report).encode())
        except SystemExit:
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
