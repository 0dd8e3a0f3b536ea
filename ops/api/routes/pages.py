"""The browser pages chargeops serves itself (`/crew`, `/status`): static HTML, CSS and JS shipped in the
package, no build step, one way of serving them.

A page holds no data and asks for an API token itself, so everything it shows still goes through the `/api/`
checks. Explicit routes rather than a StaticFiles mount, because an APIRouter does not carry mounts into the
app, and a fixed list of files leaves nothing else on disk reachable.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from ops.api.errors import ApiError

PAGES_DIR = Path(__file__).resolve().parents[2]
HEADERS = {
    # Revalidate each time so an open page (a crew's phone) never runs old code against a newer API.
    "Cache-Control": "no-cache",
    # Only this origin's scripts, styles and API: a token pasted into the page cannot be sent elsewhere.
    "Content-Security-Policy": "default-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def page_router(page: str, files: dict[str, str], index: bool = True) -> APIRouter:
    """Routes for the page `ops/<page>/`: `/<page>` (and `/<page>/`) is its index.html (unless `index` is
    false: a folder of shared files), `/<page>/<name>` one of `files` (file name → media type); anything else
    is a JSON 404."""
    directory = PAGES_DIR / page
    router = APIRouter(include_in_schema=False)

    if index:

        @router.get(f"/{page}")
        @router.get(f"/{page}/")
        async def index_html() -> FileResponse:
            return FileResponse(
                directory / "index.html", media_type="text/html; charset=utf-8", headers=HEADERS
            )

    @router.get(f"/{page}/{{name}}")
    async def asset(name: str) -> FileResponse:
        media_type = files.get(name)
        if media_type is None:
            raise ApiError(404, "not_found", f"no {page} page file {name}")
        return FileResponse(directory / name, media_type=f"{media_type}; charset=utf-8", headers=HEADERS)

    return router


# What the pages share (`ops/ui`): the colours, frame and top bar, the API call and DOM helpers.
shared_router = page_router("ui", {"ui.js": "text/javascript", "ui.css": "text/css"}, index=False)
