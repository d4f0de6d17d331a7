"""The catalog rule, as services apply it to a profile named in a request."""

from __future__ import annotations

from hubml.hub_config.catalog import ProfileChoiceError, choose_profile, visible_profiles

from .errors import APIError


async def resolve_profile(ctx, slug, user: str):
    """The profile ``slug`` (or the default) if ``user`` may use it; APIError 400/403 otherwise.

    Group membership is asked of the hub at the time of the request, so a person removed from
    a group loses its profiles at once.
    """
    groups = await ctx.hub.groups_of(user)
    try:
        return choose_profile(ctx.settings.profiles, slug, groups, user)
    except ProfileChoiceError as e:
        raise APIError(e.status, str(e)) from None


async def profiles_for(ctx, user: str) -> list:
    return visible_profiles(ctx.settings.profiles, await ctx.hub.groups_of(user))
