"""The trust boundaries as configuration: who signs in how, who runs as whom, what reaches whom.

Built with a ``Config()`` and the real authenticator classes, without a running hub.
"""

from __future__ import annotations

import json
import os
from importlib.metadata import entry_points

import pytest
import yaml
from traitlets.config import Config

from hubml.extensions.common.netcheck import URLNotAllowed, address_problem, check_url
from hubml.hub_config import accounts
from hubml.hub_config.configurer import apply_settings
from hubml.hub_config.settings import load_settings

DEPLOY = __import__("pathlib").Path(__file__).resolve().parents[2] / "hub_config" / "deploy"
SECRET_DB = "postgresql+psycopg://hub:s3cret-db-password@db/hub"


def settings_with(tmp_path, data: dict, name="s.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return load_settings(
        path, environ={"HUBML_DATA_DIR": str(tmp_path / "data"), "HUBML_ADMIN_TOKEN": "a" * 40}
    )


def configured(settings) -> Config:
    c = Config()
    apply_settings(c, settings)
    return c


def authenticator(c: Config):
    name = c.JupyterHub.authenticator_class
    if "." in name:
        module, cls = name.rsplit(".", 1)
        return getattr(__import__(module, fromlist=[cls]), cls)
    return next(e for e in entry_points(group="jupyterhub.authenticators") if e.name == name).load()


def test_people_sign_in_with_their_own_password_by_default(tmp_path):
    s = settings_with(tmp_path, {})
    c = configured(s)
    assert c.JupyterHub.authenticator_class == "hubml.hub_config.auth.HubmlNativeAuthenticator"
    assert (
        c.NativeAuthenticator.minimum_password_length >= 8
        and c.NativeAuthenticator.check_common_password
    )
    # the first admin has a password from the start (nobody can sign up under the admin's name)
    bootstrap = s.data_dir / "admin-password"
    assert c.HubmlNativeAuthenticator.admin_password_file == str(bootstrap)
    assert len(bootstrap.read_text().strip()) >= 32 and bootstrap.stat().st_mode & 0o077 == 0
    assert c.Authenticator.admin_users == {"admin"}
    assert "SharedPasswordAuthenticator" not in c


def test_a_shared_password_is_a_demo_mode_every_page_names(tmp_path):
    c = configured(settings_with(tmp_path, {"auth": {"authenticator": "shared-password"}}))
    assert c.JupyterHub.authenticator_class == "shared-password"
    assert "Demo mode, no identity" in c.JupyterHub.template_vars["announcement"]


def test_one_shared_trust_domain_is_said_on_every_page(tmp_path):
    c = configured(settings_with(tmp_path, {"hub": {"isolation": "shared"}}))
    assert "All users share one trust domain" in c.JupyterHub.template_vars["announcement"]
    assert all("user" not in s for s in c.JupyterHub.services)  # nothing pretends otherwise


@pytest.mark.parametrize("example", ["settings-github.yaml", "settings-oidc.yaml"])
def test_identity_provider_examples_configure_a_real_oauthenticator(tmp_path, example):
    s = load_settings(DEPLOY / example, environ={"HUBML_DATA_DIR": str(tmp_path)})
    c = configured(s)
    cls = authenticator(c)
    instance = cls(config=c)  # the real class accepts every trait the example sets
    assert instance.oauth_callback_url == "https://hub.example.org/hub/oauth_callback"
    assert c.JupyterHub.subdomain_host == "https://hub.example.org"
    if example == "settings-oidc.yaml":
        assert (
            instance.manage_groups and "load_groups" not in c.JupyterHub
        )  # groups come from the provider


def test_users_and_services_have_origins_of_their_own(tmp_path):
    c = configured(settings_with(tmp_path, {"hub": {"port": 8123}}))
    assert c.JupyterHub.subdomain_host == "http://localhost:8123"
    assert c.JupyterHub.bind_url == "http://127.0.0.1:8123/"
    env = c.Spawner.environment
    # kernels reach each service at its own front door, never through the hub's origin
    for key in ("MLFLOW_TRACKING_URI", "HUBML_JOBS_URL", "HUBML_APPS_URL"):
        assert env[key].startswith("http://127.0.0.1:") and "/services/" in env[key]


def test_services_run_as_the_platform_and_get_no_hub_secret(tmp_path):
    s = settings_with(
        tmp_path, {"hub": {"db_url": SECRET_DB}, "auth": {"shared_password": "demo-demo-demo"}}
    )
    c = configured(s)
    services = {x["name"]: x for x in c.JupyterHub.services}
    managed = [x for x in services.values() if "command" in x]
    assert {x["name"] for x in managed} == {
        "hubml-policy",
        "mlflow",
        "jobs",
        "hubml-runners",
        "apps",
        "home",
        "cost",
        "features",
    }
    for svc in managed:
        env = svc["environment"]
        blob = json.dumps(svc)
        assert "a" * 40 not in blob and "demo-demo-demo" not in blob  # admin token, shared password
        assert SECRET_DB not in " ".join(svc["command"])
        resolved = json.loads(env["HUBML_SETTINGS_JSON"])
        assert resolved["auth"]["admin_token"] == "" and resolved["auth"]["shared_password"] == ""
        if os.geteuid() == 0:
            # as root: the platform's own account; only the runner service (which becomes each
            # run's owner) is root
            assert svc.get("user") == (
                None if svc["name"] == "hubml-runners" else accounts.PLATFORM_ACCOUNT
            ), svc["name"]
    assert "user" not in services["hubml-runners"]


def test_unix_account_names_are_safe_and_never_shared():
    assert accounts.unix_name("alice") == "hubml-alice"
    odd = ["Alice", "alice.smith@example.org", "x" * 60, "bob-", "ｕｎｉ", "a b"]
    names = [accounts.unix_name(n) for n in odd]
    assert len(set(names)) == len(names) and accounts.unix_name("alice") not in names
    for n in names:
        assert (
            len(n) <= 32
            and n.startswith("hubml-")
            and n.replace("-", "").replace("_", "").isalnum()
        )
    assert accounts.unix_name("x" * 60) != accounts.unix_name("x" * 61)


@pytest.mark.parametrize(
    "address,why",
    [
        ("127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("fd00::1", "private"),
        ("100.64.0.1", "not a public"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
    ],
)
def test_webhook_addresses_inside_the_network_are_refused(address, why):
    assert why in address_problem(address)


def test_public_addresses_pass_and_operators_may_allow_named_hosts():
    assert address_problem("8.8.8.8") is None and address_problem("2001:4860:4860::8888") is None
    with pytest.raises(
        URLNotAllowed, match="localhost resolves to 127.0.0.1 is a loopback address"
    ):
        check_url("http://localhost/hook")
    assert check_url("http://localhost/hook", ["localhost"]) == "http://localhost/hook"
    assert (
        check_url("http://localhost/hook", ["*.example.org", "local*"]) == "http://localhost/hook"
    )


def test_webhooks_to_the_machine_itself_are_refused_whatever_the_spelling():
    for url in (
        "http://127.0.0.1:8000/hub/api/users",
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/",
        "http://[::1]/",
        "http://0.0.0.0:9/",
        "http://localhost/",
    ):
        with pytest.raises(URLNotAllowed, match="webhooks go to public http"):
            check_url(url)


def test_make_run_says_how_the_first_admin_gets_in(tmp_path, monkeypatch, capsys):
    from hubml.hub_config import cli

    monkeypatch.setenv("HUBML_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("HUBML_SETTINGS", raising=False)
    monkeypatch.chdir(tmp_path)

    def no_exec(*args):
        raise SystemExit(0)

    monkeypatch.setattr(os, "execve", no_exec)
    with pytest.raises(SystemExit):
        cli.main(["up"])
    out = capsys.readouterr().out
    assert "hubml is starting at http://localhost:8000/" in out
    assert (
        f"the first admin (admin) signs in with the password in {tmp_path / 'data' / 'admin-password'}"
        in out
    )
    assert "signs up at http://localhost:8000/hub/signup" in out and "/hub/authorize" in out
    assert (tmp_path / "data" / "admin-password").exists()


def test_the_home_page_acts_with_the_persons_token_and_holds_no_scopes_of_its_own(tmp_path):
    c = configured(settings_with(tmp_path, {}))
    home = next(x for x in c.JupyterHub.services if x["name"] == "home")
    # what the home service may do on a person's behalf: read their servers, use the services
    assert sorted(home["oauth_client_allowed_scopes"]) == [
        "access:services!service=apps",
        "access:services!service=cost",
        "access:services!service=features",
        "access:services!service=jobs",
        "access:services!service=mlflow",
        "read:servers!user",
    ]
    # and nothing as itself: no role names it
    assert not [r for r in c.JupyterHub.load_roles if "home" in r.get("services", [])]
    user = next(r for r in c.JupyterHub.load_roles if r["name"] == "user")
    assert "access:services!service=home" in user["scopes"]
    # kernels' tokens do not open it (a notebook has no business reading the whole home)
    assert "access:services!service=home" not in c.Spawner.server_token_scopes
