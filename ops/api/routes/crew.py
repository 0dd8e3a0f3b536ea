"""The crew web page at `/crew`: static HTML, CSS and JS shipped in the package (`ops/crew`), no build step.

It needs no token: the page holds no data and asks for the crew's API token itself, so every ticket it shows
still goes through the `/api/` checks. Explicit routes rather than a StaticFiles mount, because an APIRouter
does not carry mounts into the app, and a fixed list of files leaves nothing else on disk reachable.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from ops.api.errors import ApiError

router = APIRouter(include_in_schema=False)

CREW_DIR = Path(__file__).resolve().parents[2] / "crew"
_FILES = {"crew.js": "text/javascript", "crew.css": "text/css", "icon.svg": "image/svg+xml"}
_HEADERS = {
    # Revalidate each time so a crew's phone never runs an old page against a newer API.
    "Cache-Control": "no-cache",
    # Only this origin's scripts, styles and API: a token pasted into the page cannot be sent elsewhere.
    "Content-Security-Policy": "default-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@router.get("/crew")
@router.get("/crew/")
async def crew_page() -> FileResponse:
    return FileResponse(CREW_DIR / "index.html", media_type="text/html; charset=utf-8", headers=_HEADERS)


@router.get("/crew/{name}")
async def crew_asset(name: str) -> FileResponse:
    media_type = _FILES.get(name)
    if media_type is None:
        raise ApiError(404, "not_found", f"no crew page file {name}")
    return FileResponse(CREW_DIR / name, media_type=f"{media_type}; charset=utf-8", headers=_HEADERS)
