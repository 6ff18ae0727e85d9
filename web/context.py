"""What every web handler reaches through ``request.app[WEB]``."""

from __future__ import annotations

from dataclasses import dataclass
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

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
STATIC = Path(__file__).resolve().parent / "static"


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
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
