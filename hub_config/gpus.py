"""GPUs of this host: detection and a ledger of who holds which device.

The ledger is a small JSON file under the data dir, changed only under an exclusive ``flock``,
so the hub and other hubml services (the jobs scheduler) share one inventory and can never
hand the same device index to two holders. Each holding records the PID (and that process's
start time, against PID reuse) of the process using the device; a holding whose process is gone
is dropped the next time anybody reads the ledger. So a crashed server, job or hub cannot leak a
device: liveness, not bookkeeping, decides.

A hand-off (the jobs service reserves, the runner service starts the run, the service records
the run's process) has a moment where the holder named in the ledger is the service while the
run already has the device: a job's holding therefore also names its run's lock file, which
the service locks before it starts the runner and the runner holds for its whole life. A
holding is alive while its process is, *or* while that file is locked (seen in ``/proc/locks``,
without taking the lock), so a service killed mid-hand-off does not free a device its run uses.

The file is replaced atomically (written, fsynced, renamed). A ledger that cannot be read or
does not have the ledger's shape fails closed: :class:`LedgerUnreadable`, nothing is handed out
until an operator repairs or removes it; it is never read as empty.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("hubml.gpus")


@dataclass(frozen=True)
class Device:
    index: int
    model: str  # as the driver names it, e.g. "NVIDIA A100-SXM4-40GB"
    memory_mib: int | None = None


def _tokens(name: str) -> set[str]:
    return {t for t in re.split(r"[^a-z0-9]+", name.lower()) if t}


def model_matches(profile_model: str, device_model: str) -> bool:
    """Whether a catalog GPU model token ("A100") names this device ("NVIDIA A100-SXM4-40GB").

    Compared token by token so that "A10" does not match an A100 and "T4" does not match
    "RTX 4000".
    """
    wanted = _tokens(profile_model)
    return bool(wanted) and wanted <= _tokens(device_model)


def detect_nvidia(nvidia_smi: str = "nvidia-smi", timeout: float = 10.0) -> list[Device]:
    """Ask ``nvidia-smi`` for this host's GPUs. No driver or no GPU gives ``[]``."""
    exe = shutil.which(nvidia_smi)
    if not exe:
        log.info("no %s on PATH: this host has no NVIDIA GPUs for hubml", nvidia_smi)
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError) as e:
        log.warning("nvidia-smi failed (%s): treating this host as having no GPUs", e)
        return []
    return parse_nvidia_smi(out)


def parse_nvidia_smi(text: str) -> list[Device]:
    devices = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 2 or not parts[0].isdigit():
            continue
        mem = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else None
        devices.append(Device(index=int(parts[0]), model=parts[1], memory_mib=mem))
    return devices


def ledger_path(data_dir: str | Path) -> Path:
    """The ledger's file: in the platform's ``gpus/`` folder, which users cannot read or write."""
    return Path(data_dir) / "gpus" / "gpu-ledger.json"


def inventory_from_settings(setting) -> list[Device]:
    """The inventory named by ``gpus.inventory``: "auto", "none" or a declared list."""
    if setting == "none":
        return []
    if setting == "auto":
        return detect_nvidia()
    return [Device(index=d.index, model=d.model) for d in setting]


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None when it is not running."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        if fields[0] == "Z":  # a zombie holds nothing
            return None
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def holder_name(owner: str) -> str:
    """A holding's owner as a person reads it: ``alice's server``, ``alice's server "big"``,
    ``alice's app "demo"``, ``job run r1``."""
    kind, _, rest = owner.partition(":")
    if kind == "server":
        user, _, name = rest.partition("/")
        if not name:
            return f"{user}'s server"
        if name.startswith("app-"):
            return f'{user}\'s app "{name[4:]}"'
        return f'{user}\'s server "{name}"'
    if kind == "job":
        return f"job run {rest}"
    return owner


class GPUUnavailable(Exception):
    """No device of the wanted model is free; carries what a person needs to decide."""

    def __init__(self, model: str, count: int, total: int, busy: dict[int, str]):
        self.model, self.count, self.total, self.busy = model, count, total, busy
        if total == 0:
            msg = f"this host has no {model} GPU"
        else:
            held = ", ".join(
                f"GPU {i} is in use by {holder_name(who)}" for i, who in sorted(busy.items())
            )
            msg = f"no free {model}: {count} needed, {total - len(busy)} of {total} free ({held})"
        super().__init__(msg)


class LedgerUnreadable(RuntimeError):
    """The ledger exists but cannot be trusted: no device is handed out until it is fixed."""

    def __init__(self, path: Path, what: str):
        self.path = path
        super().__init__(
            f"the GPU ledger {path} is unreadable ({what}); no GPU is handed out until it is "
            "fixed: check which processes use the GPUs (nvidia-smi), then repair the file or "
            "remove it (a removed ledger is rebuilt empty, so only when no GPU is in use)"
        )


def flock_held(path: str | Path) -> bool:
    """Whether some process holds a ``flock`` on ``path`` (``/proc/locks``; the lock is not
    taken, so this never races with its holder). Matched on the inode number alone: a device
    number can differ between ``stat`` and ``/proc/locks`` (overlay file systems), and a false
    "held" only keeps a holding its owner releases explicitly."""
    try:
        inode = os.stat(path).st_ino
    except OSError:
        return False
    try:
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return True  # cannot tell: keep the holding (its owner releases it explicitly)
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"; waiters have "->" after the id
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(inode):
            return True
    return False


def lock_holders(path: str | Path) -> list[int]:
    """PIDs of the processes that have ``path`` open (``/proc/<pid>/fd``; root sees them all)."""
    target = os.path.realpath(path)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    found.append(int(entry.name))
                    break
            except OSError:
                continue
    return sorted(found)


class GPULedger:
    """Device allocations shared by every process that uses ``path``."""

    def __init__(self, path: str | Path, devices: list[Device]):
        self.path = Path(path)
        self.devices = sorted(devices, key=lambda d: d.index)

    @contextlib.contextmanager
    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a+") as lock:
            self._keep_owner(self.path.with_suffix(".lock"))
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                holdings = self._read()
                live = {i: h for i, h in holdings.items() if self._alive(h)}
                for i in set(holdings) - set(live):
                    log.info("GPU %s: holder %s is gone, device released", i, holdings[i]["owner"])
                state = {"holdings": live}
                yield state
                self._write(state["holdings"])
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict[int, dict]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}  # first use
        except (OSError, UnicodeDecodeError) as e:
            raise LedgerUnreadable(self.path, f"{type(e).__name__}: {e}") from None
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            what = "empty" if not text.strip() else f"not JSON: {e}"
            raise LedgerUnreadable(self.path, what) from None
        if not isinstance(raw, dict):
            raise LedgerUnreadable(self.path, "not a JSON object of device indices")
        holdings = {}
        for key, holding in raw.items():
            if not (
                key.isdigit()
                and isinstance(holding, dict)
                and isinstance(holding.get("owner"), str)
                and isinstance(holding.get("pid"), int)
            ):
                raise LedgerUnreadable(self.path, f"device {key!r} is not a holding")
            holdings[int(key)] = holding
        return holdings

    def _write(self, holdings: dict[int, dict]) -> None:
        tmp = self.path.with_suffix(".tmp")
        data = json.dumps({str(k): v for k, v in holdings.items()}, indent=1).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._keep_owner(tmp)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _keep_owner(self, path: Path) -> None:
        """The hub (root) and the jobs service (the platform's account) share the ledger: what
        root writes keeps the owner of the ledger's folder, so the other can still change it."""
        if os.geteuid() == 0:
            st = self.path.parent.stat()
            os.chown(path, st.st_uid, st.st_gid)

    @staticmethod
    def _alive(holding: dict) -> bool:
        started = process_start_time(int(holding.get("pid", 0)))
        if started is not None and started == holding.get("pid_start"):
            return True
        # handed over to a process that holds this lock file (a job's runner)
        return bool(holding.get("lock")) and flock_held(holding["lock"])

    def _matching(self, model: str) -> list[Device]:
        return [d for d in self.devices if model_matches(model, d.model)]

    def availability(self, model: str) -> tuple[int, int]:
        """(free, total) devices of ``model``."""
        matching = self._matching(model)
        if not matching:
            return 0, 0
        with self._locked() as state:
            held = state["holdings"]
        return sum(1 for d in matching if d.index not in held), len(matching)

    def holdings(self) -> dict[int, dict]:
        with self._locked() as state:
            return dict(state["holdings"])

    def reserve(
        self,
        owner: str,
        model: str,
        count: int,
        pid: int | None = None,
        lock: str | Path | None = None,
    ) -> list[int]:
        """Hold ``count`` free devices of ``model`` for ``owner``, on behalf of ``pid`` (and,
        once it is locked, of whoever holds the file ``lock``).

        Raises :class:`GPUUnavailable` and holds nothing when not enough are free, and
        :class:`LedgerUnreadable` when the ledger cannot be trusted. An owner that already
        holds devices gets those back (a retried start does not double-book).
        """
        pid = pid or os.getpid()
        matching = self._matching(model)
        with self._locked() as state:
            held = state["holdings"]
            mine = sorted(i for i, h in held.items() if h["owner"] == owner)
            if mine:
                return mine
            free = [d.index for d in matching if d.index not in held]
            if len(free) < count:
                busy = {d.index: held[d.index]["owner"] for d in matching if d.index in held}
                raise GPUUnavailable(model, count, len(matching), busy)
            chosen = free[:count]
            for i in chosen:
                held[i] = {
                    "owner": owner,
                    "pid": pid,
                    "pid_start": process_start_time(pid),
                    "since": time.time(),
                    **({"lock": str(lock)} if lock else {}),
                }
            return chosen

    def attach(self, owner: str, pid: int) -> None:
        """Hand ``owner``'s devices over to ``pid`` (the process that now uses them)."""
        with self._locked() as state:
            for h in state["holdings"].values():
                if h["owner"] == owner:
                    h["pid"], h["pid_start"] = pid, process_start_time(pid)

    def release(self, owner: str) -> list[int]:
        """Drop ``owner``'s holdings; with an unreadable ledger nothing can be dropped (and
        nothing is handed out either): logged, ``[]``."""
        try:
            with self._locked() as state:
                held = state["holdings"]
                mine = [i for i, h in held.items() if h["owner"] == owner]
                for i in mine:
                    del held[i]
        except LedgerUnreadable as e:
            log.error("could not release the GPUs of %s: %s", owner, e)
            return []
        return sorted(mine)
