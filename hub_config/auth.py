"""Sign-in: each person with their own password, approved by an admin (the embedded default).

hubml uses NativeAuthenticator (jupyterhub-nativeauthenticator), the maintained JupyterHub
authenticator for hubs without an identity provider: people sign up at ``/hub/signup`` with a
password of their own, an admin approves them at ``/hub/authorize``, and only then can they sign
in. It was chosen over FirstUseAuthenticator (The Littlest JupyterHub's default) because first use
lets whoever comes first claim any name that has not signed in yet ("bob signs in as alice" the
day before alice does); with NativeAuthenticator nobody gets in under a name an admin did not
approve.

hubml adds two things:

- **The first admin exists from the start.** Each name in ``auth.admin_users`` is created at the
  hub's first start with a generated password kept in ``<data_dir>/admin-password`` (printed by
  ``make run``), so nobody can sign up under an admin's name before the admin does (an admin's
  sign-up would be approved automatically). The admin changes it at ``/hub/change-password``.
- **Approvals change state only by POST.** NativeAuthenticator's ``/hub/authorize/<name>`` and
  ``/hub/discard/<name>`` act on a plain GET, which a link on any page could trigger in an
  admin's browser; here a GET shows what would happen and a form (with the hub's XSRF token)
  does it.
- **The login page works with JupyterHub 6.** NativeAuthenticator 1.3.0's login handler still
  times logins with ``statsd``, which JupyterHub 5 removed, and renders errors with arguments the
  current login page no longer passes; :class:`_LoginHandler` keeps its page and its "not
  approved yet" message on JupyterHub's own login flow.
"""

from __future__ import annotations

from pathlib import Path

from jupyterhub.scopes import needs_scope
from nativeauthenticator import NativeAuthenticator
from nativeauthenticator.handlers import LocalBase
from nativeauthenticator.handlers import LoginHandler as NativeLoginHandler
from nativeauthenticator.orm import UserInfo
from tornado import web
from traitlets import Unicode

admins_only = needs_scope("admin:users")


class _ConfirmedToggle(LocalBase):
    """GET: ask; POST (XSRF-checked by the hub): change the person's approval."""

    @admins_only
    async def get(self, name):
        info = self.authenticator.get_user(name)
        if info is None:
            raise web.HTTPError(404, f"nobody signed up as {name!r}")
        verb = "Revoke the approval of" if info.is_authorized else "Approve"
        html = await self.render_template(
            "hubml-confirm.html",
            title=f"{verb} {name}?",
            question=(
                f"{name} will no longer be able to sign in."
                if info.is_authorized
                else f"{name} will be able to sign in with the password they chose."
            ),
            action=f"{verb} {name}",
        )
        self.finish(html)

    @admins_only
    async def post(self, name):
        info = self.authenticator.get_user(name)
        if info is None:
            raise web.HTTPError(404, f"nobody signed up as {name!r}")
        info.is_authorized = not info.is_authorized
        self.authenticator.db.commit()
        self.log.info(
            "%s %s %s",
            self.current_user.name,
            "approved" if info.is_authorized else "unapproved",
            name,
        )
        self.redirect(self.hub.base_url + "authorize")


class _ConfirmedDiscard(LocalBase):
    @admins_only
    async def get(self, name):
        html = await self.render_template(
            "hubml-confirm.html",
            title=f"Discard {name}'s sign-up?",
            question=f"The sign-up of {name} is deleted; they may sign up again.",
            action=f"Discard {name}",
        )
        self.finish(html)

    @admins_only
    async def post(self, name):
        info = self.authenticator.get_user(name)
        if info is not None and not info.is_authorized:
            self.authenticator.db.delete(info)
            self.authenticator.db.commit()
        self.redirect(self.hub.base_url + "authorize")


class _LoginHandler(NativeLoginHandler):
    def _render(self, login_error=None, username=None, **_ignored):
        from tornado.escape import url_escape
        from tornado.httputil import url_concat

        next_url = self.get_argument("next", default="")
        return self.render_template(
            "native-login.html",
            next=url_escape(next_url),
            username=username,
            login_error=login_error,
            login_url=self.settings["login_url"],
            enable_signup=self.authenticator.enable_signup,
            two_factor_auth=self.authenticator.allow_2fa,
            authenticator_login_url=url_concat(
                self.authenticator.login_url(self.hub.base_url), {"next": next_url}
            ),
        )

    async def post(self):
        data = {arg: self.get_argument(arg, strip=False) for arg in self.request.arguments}
        user = await self.login_user(data)
        if user:
            self._jupyterhub_user = user
            self.redirect(self.get_next_url(user))
            return
        username = data.get("username", "")
        error = "Invalid username or password."
        info = self.authenticator.get_user(username) if username else None
        if (
            info is not None
            and not info.is_authorized
            and info.is_valid_password(data.get("password", ""))
        ):
            error = f"{username} has signed up, but an admin has not approved the account yet."
        self.finish(await self._render(login_error=error, username=username))


class HubmlNativeAuthenticator(NativeAuthenticator):
    """NativeAuthenticator with bootstrapped admins and POST-only approvals (see module doc)."""

    admin_password_file = Unicode(
        "",
        help="""File holding the first password of the users in ``admin_users`` (created by hubml
        at first start, mode 0600). Each admin that has no account yet gets one with it, approved.
        """,
    ).tag(config=True)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._bootstrap_admins()

    def _bootstrap_admins(self) -> None:
        import bcrypt

        if not self.admin_password_file:
            return
        password = Path(self.admin_password_file).read_text().strip()
        for name in sorted(self.admin_users):
            if self.get_user(name) is None:
                self.db.add(
                    UserInfo(
                        username=name,
                        is_authorized=True,
                        password=bcrypt.hashpw(password.encode(), bcrypt.gensalt()),
                    )
                )
                self.db.commit()
                self.log.info(
                    "admin %s can sign in with the password in %s", name, self.admin_password_file
                )

    def get_handlers(self, app):
        handlers = dict(super().get_handlers(app))
        handlers[r"/login"] = _LoginHandler
        handlers[r"/authorize/([^/]*)"] = _ConfirmedToggle
        handlers[r"/discard/([^/]*)"] = _ConfirmedDiscard
        return list(handlers.items())
