"""The fleet status page at `/status` (issue 13, `ops/status`), served as every page is
(`ops.api.routes.pages`, the same headers as the crew page).

Read-only and for any role: everything it shows comes from `/api/` routes (the fleet summary, the charger
list, open tickets, supply warnings) under the token's role and region.
"""

from __future__ import annotations

from ops.api.routes.pages import PAGES_DIR, page_router

STATUS_DIR = PAGES_DIR / "status"
router = page_router(
    "status", {"status.js": "text/javascript", "status.css": "text/css", "icon.svg": "image/svg+xml"}
)
