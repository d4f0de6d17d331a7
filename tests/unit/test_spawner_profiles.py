"""Profile choice on the server side, the selector's cards, and the local spawner's environment."""

import asyncio
import html
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
from tornado import web

from tests.mocking import local_spawner


def run(coro):
    # a fresh loop in a fresh thread: other tiers (Playwright's sync API) may hold this one's
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def apply(spawner, options):
    return run(spawner._run_apply_user_options(options))


def status_and_message(spawner, options):
    with pytest.raises(web.HTTPError) as info:
        apply(spawner, options)
    return info.value.status_code, info.value.jupyterhub_message


def test_unknown_slug_is_400_listing_valid_slugs(tmp_path):
    code, msg = status_and_message(local_spawner(tmp_path), {"profile": "gpu-z9000"})
    assert code == 400
    assert (
        msg
        == "Unknown profile 'gpu-z9000'. Valid profiles: cpu-small, cpu-large, gpu-t4, gpu-a10g."
    )


def test_profile_of_another_group_is_403(tmp_path):
    code, msg = status_and_message(local_spawner(tmp_path), {"profile": "gpu-a100"})
    assert code == 403
    assert msg.startswith(
        "Profile 'gpu-a100' is limited to members of gpu-users; alice may use: cpu-small"
    )


def test_malformed_options_are_400(tmp_path):
    assert status_and_message(local_spawner(tmp_path), {"profile": 3})[0] == 400
    code, msg = status_and_message(
        local_spawner(tmp_path), {"profile": "cpu-small", "image": "evil"}
    )
    assert code == 400 and "Unknown server option(s): image" in msg


def test_empty_options_take_the_default_profile(tmp_path):
    sp = local_spawner(tmp_path)
    apply(sp, {})
    assert sp.environment["HUBML_PROFILE"] == "cpu-small"


def test_cpu_profile_environment_hides_gpus(tmp_path):
    sp = local_spawner(tmp_path, inventory=[(0, "NVIDIA A100-SXM4-40GB")])
    apply(sp, {"profile": "cpu-large"})
    env = sp.environment
    assert env["HUBML_PROFILE"] == "cpu-large"
    assert env["HUBML_PRICE_PER_HOUR"] == "0.3885"
    assert env["HUBML_GPU"] == "none"
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert sp.mem_limit == 32 * 1024**3 and sp.cpu_limit == 8


def test_gpu_profile_gets_its_own_device_and_a_clear_refusal_when_busy(tmp_path):
    inventory = [(0, "NVIDIA A100-SXM4-40GB")]
    alice = local_spawner(tmp_path, "alice", ["gpu-users"], inventory)
    apply(alice, {"profile": "gpu-a100"})
    assert alice.environment["CUDA_VISIBLE_DEVICES"] == "0"
    assert alice.environment["HUBML_GPU"] == "1 x A100"
    assert alice.profile_events[-1]["message"] == "Reserving 1 × A100 (GPU 0)"

    bob = local_spawner(tmp_path, "bob", ["gpu-users"], inventory)
    code, msg = status_and_message(bob, {"profile": "gpu-a100"})
    assert code == 409
    assert msg == (
        "Cannot start NVIDIA A100 40GB: no free A100: 1 needed, 0 of 1 free (GPU 0 is in use by "
        "alice's server). Try again when it is released, or choose one of: Small CPU, Large CPU."
    )
    run(alice.stop())  # never started: stopping still hands the device back
    apply(bob, {"profile": "gpu-a100"})
    assert bob.environment["CUDA_VISIBLE_DEVICES"] == "0"


def cards_of(page):
    return re.findall(r'<label class="hubml-card[^"]*" data-slug="([^"]+)"', page)


def test_selector_shows_prices_estimates_policy_and_availability(tmp_path):
    sp = local_spawner(
        tmp_path,
        "alice",
        ["gpu-users"],
        [(0, "NVIDIA A100-SXM4-40GB"), (1, "NVIDIA A100-SXM4-40GB")],
    )
    page = html.unescape(sp.options_form(sp))
    assert cards_of(page) == [
        "cpu-small",
        "cpu-large",
        "gpu-t4",
        "gpu-a10g",
        "gpu-a100",
        "gpu-h100",
    ]
    assert "$3.67/h" in page and "8 h ≈ $29.36" in page
    assert "Stops after 30 min idle · at most 8 h per session" in page
    assert "2 of 2 A100 free" in page
    assert "Unavailable on this host: no H100 GPU" in page
    h100 = page[page.index('data-slug="gpu-h100"') :]
    assert re.search(r'value="gpu-h100"[^>]*disabled', h100)
    assert re.search(r'value="cpu-small"\s[^>]*checked', page)


def test_selector_hides_profiles_of_other_groups(tmp_path):
    page = local_spawner(tmp_path, "bob").options_form(local_spawner(tmp_path, "bob"))
    assert cards_of(page) == ["cpu-small", "cpu-large", "gpu-t4", "gpu-a10g"]
    assert "A100" not in page


def test_selector_escapes_catalog_text(tmp_path):
    sp = local_spawner(tmp_path)
    catalog = list(sp.catalog)
    catalog[0] = {**catalog[0], "description": "<script>alert(1)</script>"}
    sp.catalog = catalog
    page = sp.options_form(sp)
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page


def test_form_data_becomes_a_profile_option(tmp_path):
    sp = local_spawner(tmp_path)
    assert sp.run_options_from_form({"profile": ["gpu-t4"]}) == {"profile": "gpu-t4"}


def named(server: str):
    """What a named server's spawner reads its name from (the hub's record of it)."""
    from types import SimpleNamespace

    return SimpleNamespace(name=server, user=None, server=None, state=None)


@pytest.mark.parametrize("options", [{}, {"profile": "cpu-small"}])
def test_an_apps_server_runs_the_app_however_it_is_started(tmp_path, options):
    """The hub's own "Launch" button and a REST start without options start app-<name> as the
    app (the launcher, no Jupyter API), never as a JupyterLab its shares would open."""
    sp = local_spawner(
        tmp_path,
        orm_spawner=named("app-greeter"),
        apps_runtime_url="http://127.0.0.1:1/services/apps/",
    )
    apply(sp, options)
    assert sp.cmd[-2:] == ["-m", "hubml.extensions.apps.launcher"] and sp.args == []
    assert sp.environment["HUBML_APP_NAME"] == "greeter"


def test_an_apps_server_without_the_apps_service_does_not_start(tmp_path):
    sp = local_spawner(tmp_path, orm_spawner=named("app-greeter"))
    code, msg = status_and_message(sp, {})
    assert code == 400 and "Apps are not enabled" in msg
    # a server whose name merely contains "app" is an ordinary server
    other = local_spawner(tmp_path, orm_spawner=named("myapp-1"))
    apply(other, {})
    assert "HUBML_APP_NAME" not in other.environment
