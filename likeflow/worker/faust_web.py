"""The worker's web driver: Faust's aiohttp server with none of Faust's built-in views."""

from __future__ import annotations

from typing import ClassVar

from faust.web.base import _BPList
from faust.web.drivers.aiohttp import Web as AiohttpWeb

#: The scheme of `LIKEFLOW`'s driver in Faust's `web` setting (registered as the
#: `faust.web.drivers` entry point `likeflow` in pyproject.toml).
WEB_DRIVER_URL = "likeflow://"


class Web(AiohttpWeb):
    """Serves only the pages the app registers (`/health`, `/ready`, `/metrics`,
    `/creators/{id}/quality`, `/users/{id}/profile`).

    Faust mounts `/router/...` and `/table/...` by default (`GET /table/user_state/<key>/` hands
    out a user's state to whoever reaches the port) and, with its statistics off, an index at
    `/`. Clearing the blueprint lists turns all of them off whatever Faust's flags say.
    """

    default_blueprints: ClassVar[_BPList] = []
    production_blueprints: ClassVar[_BPList] = []
    debug_blueprints: ClassVar[_BPList] = []
    optional_blueprints: ClassVar[_BPList] = []
