"""What every web handler reaches through ``request.app[WEB]``."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from bot.core.links import ViewerLinks
from bot.core.models import ComponentStatus
from bot.core.service import SessionService
from bot.settings import Settings
from web.hub import ViewerHub
from web.metrics import WebMetrics
from web.security import RateLimits, TokenBucket

# Pages and static files are package data of ``web`` (``web/templates`` is a symlink to the
# top-level ``templates/``; the wheel carries the files themselves). They are found through the
# import system, so a checkout, an editable install and a wheel install all resolve the same way.


@dataclass
class WebContext:
    """The services and state of one web app."""

    service: SessionService
    links: ViewerLinks
    settings: Settings
    status: list[ComponentStatus]
    hub: ViewerHub
    metrics: WebMetrics
    limits: RateLimits
    buckets: dict[str, TokenBucket]
    templates: jinja2.Environment

    def render(self, name: str, status: int = 200, **context: Any) -> web.Response:
        """Render a template to an HTML response."""
        body = self.templates.get_template(name).render(**context)
        return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


WEB = web.AppKey("avatarbot_web", WebContext)


def make_templates() -> jinja2.Environment:
    """The Jinja2 environment: autoescaped, strict about undefined names."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def static_dir() -> Path:
    """The directory of ``web``'s static files, as the installed package holds it.

    aiohttp serves static files from a real directory, so an install that does not unpack the
    package onto the filesystem (a zip import) is refused with a clear error.
    """
    root = resources.files("web") / "static"
    if not isinstance(root, Path) or not root.is_dir():
        raise RuntimeError(f"web's static files are not an unpacked directory: {root!r}")
    return root
