"""``hubml.widgets.cost()``: what you have spent this month, in a notebook.

>>> from hubml.widgets import cost
>>> cost()                     # this month: total, by kind and profile, what runs now
>>> cost("2026-11")["spent_usd"]

Asked of the cost service with this server's own token (``HUBML_COST_URL``).
"""

from __future__ import annotations

import html
import os


class CostError(RuntimeError):
    pass


class MonthToDate(dict):
    """The cost service's answer (a dict), shown as a small table in a notebook."""

    def _repr_html_(self) -> str:
        e = html.escape

        def usd(x: float) -> str:
            return f"${x:,.2f}" if x >= 1 else f"${x:.4f}"

        rows = "".join(
            f"<tr><td>{e(k)}s</td><td style='text-align:right'>{e(usd(v))}</td></tr>"
            for k, v in self["by_kind"].items()
        )
        running = "".join(
            f"<li>{e(i['what'])} ({e(i['profile'])}): {e(usd(i['cost_usd']))} so far this month, "
            f"about {e(usd(i['projected_month_usd']))} by its end if it keeps running</li>"
            for i in self.get("running", [])
        )
        return (
            f"<div class='hubml-cost'><b>{e(self['user'])}, {e(self['month'])}: "
            f"{e(usd(self['spent_usd']))}</b><table>{rows}</table>"
            + (f"<div>Running now:<ul>{running}</ul></div>" if running else "")
            + "</div>"
        )

    def __repr__(self) -> str:
        kinds = ", ".join(f"{k}s ${v:.2f}" for k, v in self["by_kind"].items())
        return f"{self['user']}, {self['month']}: ${self['spent_usd']:.2f} ({kinds})"


def cost(
    month: str | None = None, *, timeout: float = 60, retry_s: float | None = None
) -> MonthToDate:
    """Your spend in ``month`` (``YYYY-MM``; default: this month, until now)."""
    from ._http import call

    base = os.environ.get("HUBML_COST_URL", "").rstrip("/")
    token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
    if not base:
        raise CostError("no cost service is configured for this server (HUBML_COST_URL is not set)")
    status, data, reason = call(
        "GET",
        f"{base}/api/me",
        token,
        params={"month": month} if month else None,
        timeout=timeout,
        retry_s=retry_s,
    )
    if status >= 400:
        raise CostError(data.get("message", reason))
    return MonthToDate(data)
