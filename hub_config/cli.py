"""The ``hubml`` command: start the platform, show the catalog, review Kubernetes objects."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .yamlsource import SettingsError


def _settings(args):
    from .settings import load_settings

    try:
        return load_settings(getattr(args, "settings", None))
    except SettingsError as e:
        print(f"hubml: invalid settings: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_profiles(args) -> int:
    from .catalog import format_table, profile_summary

    settings = _settings(args)
    if args.json:
        print(json.dumps([profile_summary(p) for p in settings.profiles], indent=2))
    else:
        print(format_table(settings.profiles))
    return 0


def cmd_check(args) -> int:
    settings = _settings(args)
    print(f"settings OK: {len(settings.profiles)} profiles, data in {settings.data_dir}")
    return 0


def cmd_up(args) -> int:
    from . import accounts
    from .configurer import admin_password, shared_password
    from .topology import public_url

    settings = _settings(args)
    data = settings.data_dir
    data.mkdir(parents=True, exist_ok=True)
    config = Path.cwd() / "jupyterhub_config.py"
    if not config.exists():
        config = data / "jupyterhub_config.py"
        config.write_text("from hubml.hub_config import configure\n\nconfigure(c)  # noqa: F821\n")
    admin_password(settings)  # created now so it can be read before the first sign-in
    admins = ", ".join(settings.auth.admin_users) or "(none: set auth.admin_users)"
    url = public_url(settings) + "/"
    auth = settings.auth.authenticator
    if auth == "native":
        how = (
            f"  the first admin ({admins}) signs in with the password in {data / 'admin-password'}\n"
            f"  (change it at {url}hub/change-password); everybody else signs up at {url}hub/signup\n"
            f"  and an admin approves them at {url}hub/authorize\n"
        )
    elif auth == "shared-password":
        how = (
            f"  DEMO MODE, no identity: any user name with the shared password {shared_password(settings)}\n"
            f"  admins ({admins}) use the password in {data / 'admin-password'}\n"
        )
    else:
        how = f"  people sign in with {auth} (auth.authenticator); admins: {admins}\n"
    isolation = (
        "  each person runs as their own Unix account (hubml-<name>)\n"
        if accounts.isolated(settings.hub.isolation)
        else f"  WARNING: {accounts.trust_domain_notice(settings.hub.isolation)}\n"
    )
    print(
        f"\nhubml is starting at {url} (it says when it is ready)\n{how}{isolation}  state is kept in {data}\n",
        flush=True,
    )
    env = dict(os.environ, HUBML_DATA_DIR=str(data), HUBML_ANNOUNCE_READY="1")
    if args.settings:
        env["HUBML_SETTINGS"] = str(Path(args.settings).resolve())
    argv = [sys.executable, "-m", "jupyterhub", "-f", str(config)]
    os.execve(sys.executable, argv, env)
    return 0  # pragma: no cover


def cmd_k8s(args) -> int:
    from . import k8s

    settings = _settings(args)
    try:
        if args.what == "pod":
            obj = k8s.pod_manifest(settings, args.profile, args.user)
        elif args.what == "job":
            from hubml.extensions.jobs.kube import k8s_job_manifest

            if not args.notebook:
                raise k8s.ManifestError("a job needs --notebook <path in the user's home>")
            try:
                parameters = json.loads(args.parameters) if args.parameters else {}
            except json.JSONDecodeError as e:
                raise k8s.ManifestError(
                    f"--parameters must be a JSON object of name -> value ({e})"
                ) from None
            if not isinstance(parameters, dict):
                raise k8s.ManifestError("--parameters must be a JSON object of name -> value")
            obj = k8s_job_manifest(
                settings, args.profile, args.user, args.notebook, parameters, timeout_s=args.timeout
            )
        else:  # pragma: no cover - argparse restricts choices
            raise SystemExit(f"hubml k8s: unknown object {args.what!r}")
    except k8s.ManifestError as e:
        print(f"hubml k8s {args.what}: {e}", file=sys.stderr)
        return 2
    if args.output == "json":
        print(json.dumps(obj, indent=2, sort_keys=False))
    else:
        import yaml

        print(yaml.safe_dump(obj, sort_keys=False), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hubml", description=__doc__)
    parser.add_argument(
        "--settings",
        help="settings YAML layered over the defaults (default: $HUBML_SETTINGS)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the hub, proxy and services on this machine")
    up.set_defaults(func=cmd_up)

    profiles = sub.add_parser("profiles", help="print the compute catalog")
    profiles.add_argument("--json", action="store_true", help="as JSON instead of a table")
    profiles.set_defaults(func=cmd_profiles)

    check = sub.add_parser("check", help="validate the settings and exit")
    check.set_defaults(func=cmd_check)

    k8s = sub.add_parser("k8s", help="print the Kubernetes objects hubml would create (offline)")
    k8s.add_argument(
        "what", choices=["pod", "job"], help="pod: a user's server; job: one notebook job run"
    )
    k8s.add_argument("--profile", required=True, help="catalog slug, e.g. gpu-a100")
    k8s.add_argument("--user", required=True, help="hub user name")
    k8s.add_argument("--notebook", help="job: the notebook's path in the user's home")
    k8s.add_argument("--parameters", help="job: parameters as a JSON object")
    k8s.add_argument(
        "--timeout", type=int, default=3600, help="job: seconds before the run is stopped"
    )
    k8s.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    k8s.set_defaults(func=cmd_k8s)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
