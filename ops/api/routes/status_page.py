"""The fleet status page at `/status` (issue 13): static HTML, CSS and JS shipped in the package
(`ops/status`), no build step, served like the crew page (`ops.api.routes.crew`).

Read-only and for any role: the page holds no data and asks for an API token itself, so everything it shows
comes from `/api/` routes (the fleet summary, the charger list, open tickets, supply warnings) under the
token's role and region. A fixed list of files, so nothing else on disk is reachable.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from ops.api.errors import ApiError

router = APIRouter(include_in_schema=False)

STATUS_DIR = Path(__file__).resolve().parents[2] / "status"
FILES = {"status.js": "text/javascript", "status.css": "text/css", "icon.svg": "image/svg+xml"}
HEADERS = {
    # Revalidate each time so an open page never runs old code against a newer API.
    "Cache-Control": "no-cache",
    # Only this origin's scripts, styles and API: a token pasted into the page cannot be sent elsewhere.
    # The crew page's policy; tests/test_status_page.py holds the two pages' headers equal.
    "Content-Security-Policy": "default-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@router.get("/status")
@router.get("/status/")
async def status_page() -> FileResponse:
    return FileResponse(STATUS_DIR / "index.html", media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get("/status/{name}")
async def status_asset(name: str) -> FileResponse:
    media_type = FILES.get(name)
    if media_type is None:
        raise ApiError(404, "not_found", f"no status page file {name}")
    return FileResponse(STATUS_DIR / name, media_type=f"{media_type}; charset=utf-8", headers=HEADERS)
