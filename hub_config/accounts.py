"""Who runs as whom on one machine: a Unix account per hub user, one for the platform.

When the hub runs as root (the normal single-machine install, as The Littlest JupyterHub does)
each hub user gets their own Unix account, created on first use, and everything of theirs runs
as it: their server and kernels, their job runs, their published apps. Their home under
``<data_dir>/homes/<name>`` is theirs alone (mode 0700). The platform's services run as one
more account (``hubml``) that owns the data dir's service stores; the hub's own files (database,
cookie secret, passwords) stay root's. Nobody's process can read another's home or the
platform's files.

When the hub is not root it cannot do any of this: every process shares one Unix user, and the
hub says so at start and on every page (see :func:`trust_domain_notice`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("hubml.accounts")

PLATFORM_ACCOUNT = "hubml"
PLATFORM_HOME = Path("/var/lib/hubml")  # the services' HOME (caches); their data is in the data dir
DEFAULT_PREFIX = "hubml-"
# store folders under the data dir that belong to the platform account (the services)
SERVICE_DIRS = ("mlflow", "jobs", "apps", "cost", "features", "gpus")
# root's, readable by the platform group: the runner service's socket, the accounts lock
RUN_DIR = "run"
_NAME_OK = re.compile(r"^[a-z_][a-z0-9_-]*$")
MAX_NAME = 32  # useradd's limit


def isolated(setting: str = "auto") -> bool:
    """Whether users get accounts of their own: the hub is root and settings do not say shared."""
    return setting != "shared" and os.geteuid() == 0


def trust_domain_notice(setting: str = "auto") -> str:
    """What the hub tells people about isolation; empty when every user has their own account."""
    if isolated(setting):
        return ""
    why = "hub.isolation is 'shared'" if setting == "shared" else "the hub does not run as root"
    return (
        f"All users share one trust domain ({why}): every server, kernel, job and app runs as the "
        "same Unix user and can read the others' files. Use this for a demo or a one-person hub only."
    )


def unix_name(hub_name: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The Unix account of hub user ``hub_name``: ``hubml-alice``.

    Names that are not already safe and short (upper case, dots, '@', too long) keep a readable
    stem and get a hash of the full name, so two hub users never share an account.
    """
    safe = re.sub(r"[^a-z0-9_-]", "-", hub_name.lower())
    candidate = prefix + safe
    if safe == hub_name and len(candidate) <= MAX_NAME and _NAME_OK.match(candidate):
        return candidate
    digest = hashlib.sha256(hub_name.encode()).hexdigest()[:8]
    return f"{candidate[: MAX_NAME - 9].rstrip('-')}-{digest}"


@contextlib.contextmanager
def _accounts_lock(lock_dir: Path):
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / "accounts.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _useradd(args: list[str], name: str) -> None:
    # /etc/passwd may be locked by another useradd for a moment: try again
    for attempt in range(20):
        r = subprocess.run(["useradd", *args, name], capture_output=True, text=True)
        if r.returncode == 0 or r.returncode == 9:  # 9: exists already
            return
        if "lock" not in r.stderr.lower() or attempt == 19:
            raise RuntimeError(
                f"could not create the Unix account {name}: {r.stderr.strip() or r.returncode}"
            )
        time.sleep(0.1)


def ensure_account(name: str, lock_dir: Path, *, system: bool = False, home: Path | None = None):
    """The ``pwd`` entry of account ``name``, created if missing: a user account with bash and no
    home of its own in passwd (hubml sets HOME), or a system account (``system``) with ``home``.

    ``lock_dir`` is a platform-private folder (``<data_dir>/run``) where the hub and the runner
    service take turns creating accounts.
    """
    import pwd

    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name)
    with _accounts_lock(lock_dir):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
        if system:
            args = [
                "--system",
                "--shell",
                "/usr/sbin/nologin",
                "--create-home",
                "--home-dir",
                str(home or "/nonexistent"),
            ]
        else:
            args = ["--shell", "/bin/bash", "--no-create-home", "--home-dir", "/nonexistent"]
        _useradd([*args, "--user-group"], name)
        log.info("created Unix account %s", name)
        return pwd.getpwnam(name)


def ensure_home(home: Path, pw) -> None:
    """``home`` exists, belongs to the account and is private (0700)."""
    home.mkdir(parents=True, exist_ok=True)
    st = home.lstat()
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise RuntimeError(f"{home} is not a folder; refusing to use it as a home")
    if (st.st_uid, st.st_gid) != (pw.pw_uid, pw.pw_gid):
        # a home made before the account existed (or by an older hubml): all of it is theirs
        for root, dirs, files in os.walk(home):
            for n in [*dirs, *files]:
                os.lchown(os.path.join(root, n), pw.pw_uid, pw.pw_gid)
        os.chown(home, pw.pw_uid, pw.pw_gid)
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(home, 0o700)


def user_account(hub_name: str, home: Path, lock_dir: Path, prefix: str = DEFAULT_PREFIX):
    """The account of hub user ``hub_name`` with its home ready (created on first use)."""
    pw = ensure_account(unix_name(hub_name, prefix), lock_dir)
    ensure_home(home, pw)
    return pw


def drop_privileges(pw) -> None:
    """In a child process: become account ``pw`` for good (groups, gid, uid), private umask."""
    os.setgroups([pw.pw_gid])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    if os.getuid() == 0 or os.geteuid() == 0:  # pragma: no cover - setuid failing silently
        raise RuntimeError(f"could not drop root privileges to {pw.pw_name}")
    os.umask(0o077)


def platform_python() -> set[Path]:
    """The folders users' accounts must reach to run the platform's Python (its venv and base)."""
    return {
        Path(sys.prefix).resolve(),
        Path(sys.base_prefix).resolve(),
        Path(sys.executable).resolve().parent,
    }


def make_traversable(path: Path) -> list[str]:
    """Add search permission for others (o+x) to ``path`` and its ancestors where missing, so
    users' processes can reach it (the platform's Python, the data dir). Returns what changed."""
    changed = []
    for p in [path, *path.parents]:
        try:
            mode = stat.S_IMODE(p.stat().st_mode)
        except OSError:
            continue
        if p.is_dir() and not mode & stat.S_IXOTH:
            os.chmod(p, mode | stat.S_IXOTH)
            changed.append(str(p))
    return changed


def harden_data_dir(data_dir: Path, platform) -> None:
    """Set the data dir's ownership and modes (as root, at every start).

    ``data_dir`` and ``homes/``: root, 0711 (users reach their own home, list nothing); every
    other entry is private: the service stores (``SERVICE_DIRS``) to the platform account, the
    rest (hub database, secrets, logs, settings) to root. A folder's 0700 covers what is in it.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chown(data_dir, 0, 0)
    os.chmod(data_dir, 0o711)
    homes = data_dir / "homes"
    homes.mkdir(exist_ok=True)
    os.chown(homes, 0, 0)
    os.chmod(homes, 0o711)
    for name in SERVICE_DIRS:
        (data_dir / name).mkdir(exist_ok=True)
    run = data_dir / RUN_DIR
    run.mkdir(exist_ok=True)
    os.chown(run, 0, platform.pw_gid)
    os.chmod(run, 0o750)
    for entry in data_dir.iterdir():
        if entry.name in ("homes", RUN_DIR) or entry.is_symlink():
            continue
        owner = (platform.pw_uid, platform.pw_gid) if entry.name in SERVICE_DIRS else (0, 0)
        st = entry.lstat()
        if (st.st_uid, st.st_gid) != owner:
            if entry.is_dir():
                for root, dirs, files in os.walk(entry):
                    for n in [*dirs, *files]:
                        os.lchown(os.path.join(root, n), *owner)
            os.chown(entry, *owner)
        os.chmod(entry, 0o700 if entry.is_dir() else 0o600)
