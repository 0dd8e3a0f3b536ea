"""The crew web page at `/crew` (`ops/crew`): the open tickets of the crew's region on a phone, served as
every page is (`ops.api.routes.pages`); it needs no token of its own."""

from __future__ import annotations

from ops.api.routes.pages import page_router

router = page_router(
    "crew", {"crew.js": "text/javascript", "crew.css": "text/css", "icon.svg": "image/svg+xml"}
)
