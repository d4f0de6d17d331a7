"""The embedded single-machine spawner: local processes, GPUs handed out by device index."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import sys
import time
from pathlib import Path
from urllib.parse import quote

from jupyterhub.spawner import LocalProcessSpawner
from traitlets import Any, Dict, List, Unicode

from .. import accounts, gpus
from ..catalog import visible_profiles
from ..gpus import Device, GPULedger, GPUUnavailable, LedgerUnreadable
from ..settings import Profile, parse_memory
from .base import Availability, ProfileSpawnerMixin, http_error


class HubmlLocalSpawner(ProfileSpawnerMixin, LocalProcessSpawner):
    """Runs each user's server as a process on this host, on the profile they chose.

    When the hub is root (``isolation: auto``), the server runs as the user's own Unix account
    (``<unix_user_prefix><name>``, created on the first spawn) in a private home
    (``home_dir_template``, mode 0700); otherwise as the hub's user, in the same private home.

    A GPU profile reserves free devices of its model in the shared GPU ledger and exposes only
    those to the server through ``CUDA_VISIBLE_DEVICES``; CPU profiles see no GPU at all. The
    devices are released when the server stops or fails to start, and, because the ledger
    follows the server's PID (and, while the hub hands the devices over, a lock file the server
    inherits), when the hub or the server dies without cleaning up.
    CPU and memory limits are passed to the server as ``CPU_LIMIT``/``MEM_LIMIT`` (JupyterHub's
    convention, shown by jupyter-resource-usage) but not enforced on a single machine.
    """

    gpu_inventory = List(
        Dict(),
        help="""
        GPUs of this host as a list of {"index": int, "model": str}, from settings
        (`gpus.inventory`) or nvidia-smi. Empty means no GPU profile can start here.
        """,
    ).tag(config=True)

    gpu_ledger_path = Unicode(
        "",
        help="Path of the GPU ledger file shared by the hub and hubml services (under the data dir).",
    ).tag(config=True)

    gpu_devices = List(help="Device indices this server holds.")

    home_dir_template = Unicode(
        "/tmp/{username}",
        help="""The user's home, where their server starts; ``{username}`` is the hub user name.
        hubml sets ``<data_dir>/homes/{username}``.""",
    ).tag(config=True)

    isolation = Unicode(
        "auto",
        help="""``auto``: as root, run each user's server as their own Unix account (created on
        first spawn). ``shared``: run every server as the hub's user (one trust domain).""",
    ).tag(config=True)

    unix_user_prefix = Unicode(
        accounts.DEFAULT_PREFIX, help="Prefix of users' Unix account names (``hubml-alice``)."
    ).tag(config=True)

    accounts_lock_dir = Unicode(
        "",
        help="A platform-private folder where account creation is serialised (``<data_dir>/run``).",
    ).tag(config=True)

    _account = Any(None, help="The pwd entry the server runs as (isolated hubs).")

    @property
    def home_dir(self) -> str:
        return self.home_dir_template.format(username=self.user.name)

    @property
    def isolated(self) -> bool:
        return accounts.isolated(self.isolation)

    def make_preexec_fn(self, name):
        home, account = self.home_dir, self._account

        def preexec():
            if account is not None:
                accounts.drop_privileges(account)
            else:
                os.umask(0o077)
            os.chdir(home)

        return preexec

    def user_env(self, env):
        env["USER"] = self._account.pw_name if self._account is not None else self.user.name
        env["HOME"] = self.home_dir
        env["SHELL"] = "/bin/bash"
        # Gradio's uploads and caches stay in the user's home, not in a /tmp folder all users share
        env["GRADIO_TEMP_DIR"] = os.path.join(self.home_dir, ".cache", "gradio")
        return env

    def move_certs(self, paths):
        return paths

    async def _prepare_account(self) -> None:
        home = Path(self.home_dir)
        if self.isolated:
            lock_dir = (
                Path(self.accounts_lock_dir)
                if self.accounts_lock_dir
                else home.parent.parent / accounts.RUN_DIR
            )
            self._account = await asyncio.to_thread(
                accounts.user_account, self.user.name, home, lock_dir, self.unix_user_prefix
            )
            self.emit(f"Running as your own account {self._account.pw_name}", 25)
        else:
            self._account = None
            home.mkdir(parents=True, exist_ok=True)
            os.chmod(home, 0o700)

    def _ledger(self) -> GPULedger:
        devices = [Device(index=int(d["index"]), model=str(d["model"])) for d in self.gpu_inventory]
        path = self.gpu_ledger_path or os.path.join(os.getcwd(), "gpu-ledger.json")
        return GPULedger(path, devices)

    @property
    def gpu_owner(self) -> str:
        return f"server:{self.user.name}/{self.name}"

    def profile_availability(self, profile: Profile) -> Availability:
        if not profile.gpu_model:
            return Availability(True, "Available now", "ok")
        try:
            free, total = self._ledger().availability(profile.gpu_model)
        except LedgerUnreadable:
            return Availability(
                False,
                "Unavailable: the GPU ledger needs an administrator (see the hub's log)",
                "no",
            )
        model = profile.gpu_model
        if total == 0:
            return Availability(False, f"Unavailable on this host: no {model} GPU", "no")
        if free < profile.gpu_count:
            return Availability(False, f"All {total} {model} busy ({free} of {total} free)", "no")
        return Availability(True, f"{free} of {total} {model} free", "ok")

    async def apply_profile(self, profile: Profile) -> None:
        self.cpu_limit = profile.cpu.limit
        self.cpu_guarantee = profile.cpu.guarantee
        self.mem_limit = parse_memory(profile.memory.limit)
        self.mem_guarantee = parse_memory(profile.memory.guarantee)
        devices: list[int] = []
        if profile.gpu_model:
            devices = self._reserve(profile)
        self.gpu_devices = devices
        gpu = f"{profile.gpu_count} x {profile.gpu_model}" if devices else "none"
        self.environment = {
            **self.environment,
            "HUBML_PROFILE": profile.slug,
            "HUBML_PROFILE_NAME": profile.display_name,
            "HUBML_PRICE_PER_HOUR": f"{profile.price_per_hour:g}",
            "HUBML_GPU": gpu,
            "HUBML_GPU_DEVICES": ",".join(map(str, devices)),
            # an empty value hides every GPU from a CPU profile
            "CUDA_VISIBLE_DEVICES": ",".join(map(str, devices)),
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        }

    def _reserve(self, profile: Profile) -> list[int]:
        model, count = profile.gpu_model, profile.gpu_count
        try:
            devices = self._ledger().reserve(
                self.gpu_owner, model, count, pid=os.getpid(), lock=self._gpu_lock_path()
            )
        except LedgerUnreadable as e:
            self.log.error("%s", e)
            message = (
                f"Cannot start {profile.display_name}: the hub cannot tell which GPUs are free "
                "(its GPU ledger is unreadable), so it hands none out. An administrator has been "
                "told in the hub's log; CPU profiles still start."
            )
            self.emit(message, 100)
            raise http_error(503, message) from None
        except GPUUnavailable as e:
            alternatives = [
                p.display_name
                for p in visible_profiles(self.profiles, self.user_groups)
                if p.slug != profile.slug and self.profile_availability(p).ok
            ]
            hint = (
                f"Try again when it is released, or choose one of: {', '.join(alternatives)}."
                if alternatives
                else "No other profile is free right now; try again later."
            )
            message = f"Cannot start {profile.display_name}: {e}. {hint}"
            self.emit(message, 100)
            raise http_error(409, message) from None
        listing = ", ".join(f"GPU {i}" for i in devices)
        self.emit(f"Reserving {count} × {model} ({listing})", 15)
        return devices

    def get_env(self):
        env = super().get_env()
        # The server runs `python -m jupyterhub.singleuser` from this interpreter's prefix;
        # keep that prefix first on PATH so kernels and terminals use the platform environment.
        bindir = os.path.dirname(sys.executable)
        env["PATH"] = os.pathsep.join([bindir, env.get("PATH", os.environ.get("PATH", ""))])
        return env

    def _gpu_lock_path(self) -> str:
        """The file this server's process holds locked while it lives: the ledger keeps the
        holding through the hand-off from the hub to the server (see :mod:`..gpus`)."""
        ledger = self._ledger().path
        folder = ledger.parent / "gpu-locks"
        name = quote(self.gpu_owner, safe="")  # one file per server: quoting is one-to-one
        return str(folder / f"{name}.lock")

    def _end_lost_server(self) -> list[int]:
        """End the processes still holding this server's GPU lock file: a server the hub lost
        (it was killed after starting it, before recording its PID). The hub has decided this
        server is not running, so nothing may go on using its devices. SIGTERM, then SIGKILL
        after a grace; returns the PIDs found."""
        path = self._gpu_lock_path()
        if not gpus.flock_held(path):
            return []
        lost = [pid for pid in gpus.lock_holders(path) if pid != os.getpid()]
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
            for pid in lost:
                if sig == signal.SIGTERM:
                    self.log.warning(
                        "ending process %s: an earlier start of %s that the hub lost (it holds "
                        "GPU(s) of this server)",
                        pid,
                        self.gpu_owner,
                    )
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and gpus.flock_held(path):
                time.sleep(0.05)
            if not gpus.flock_held(path):
                break
        return lost

    async def _lock_gpus(self) -> int:
        """Open and lock this server's GPU lock file, for the server process to inherit."""
        path = Path(self._gpu_lock_path())
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        # readable by the hub's services: they check the holding through /proc/locks and stat
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
        for attempt in (1, 2):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if attempt == 1:
                    await asyncio.to_thread(self._end_lost_server)
        os.close(fd)
        raise http_error(
            503,
            f"the GPU(s) of {self.gpu_owner} are still used by processes of an earlier start "
            f"that could not be ended ({gpus.lock_holders(path)}); an administrator has to "
            "stop them",
        )

    async def start(self):
        lock_fd = None
        try:
            await self._prepare_account()
            self.emit("Starting your server", 30)
            if self.gpu_devices:
                # the server process inherits the locked file: if the hub dies before the PID
                # below is recorded, the device stays the server's
                lock_fd = await self._lock_gpus()
                self.popen_kwargs = {**self.popen_kwargs, "pass_fds": (lock_fd,)}
            url = await super().start()
            if self.gpu_devices:
                self._ledger().attach(self.gpu_owner, self.pid)
            self.emit(f"Server process {self.pid} started; waiting for Jupyter to answer", 60)
            return url
        except Exception as e:
            self.emit(f"Your server failed to start: {e}", 100)
            self._release()
            raise
        finally:
            if lock_fd is not None:
                os.close(lock_fd)  # the server holds it now
                self.popen_kwargs = {k: v for k, v in self.popen_kwargs.items() if k != "pass_fds"}
            self._spawn_finished = True

    async def stop(self, now=False):
        try:
            await super().stop(now=now)
        finally:
            self._release()

    def _release(self):
        if self.gpu_devices or self.gpu_inventory:
            # the hub says this server is not running: whatever still uses its devices ends
            # before they are handed out again
            self._end_lost_server()
            released = self._ledger().release(self.gpu_owner)
            if released:
                self.log.info("released GPU(s) %s held by %s", released, self.gpu_owner)
        self.gpu_devices = []

    def get_state(self):
        state = super().get_state()
        if self.gpu_devices:
            state["gpu_devices"] = list(self.gpu_devices)
        return state

    def load_state(self, state):
        super().load_state(state)
        self.gpu_devices = list(state.get("gpu_devices", []))

    def clear_state(self):
        super().clear_state()
        self._release()
