"""The interactive API docs, `/docs` (Swagger UI) and `/redoc`, served whole by chargeops: FastAPI's pages
load their JavaScript and CSS from a CDN, which leaves a white page where there is no internet.

The Swagger UI and Redoc files are vendored under `ops/api/static` (versions and origin: its README.md) and
served from a fixed list, like the crew page's. Their URLs carry the version, so browsers may keep them for a
year. No token needed: the pages hold no data and call the API with whatever token the reader enters.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse

from ops.api.errors import ApiError

router = APIRouter(include_in_schema=False)

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
SWAGGER_UI_VERSION = "5.35.0"  # npm swagger-ui-dist; 5.x reads OpenAPI 3.1, which FastAPI writes
REDOC_VERSION = "2.5.4"  # npm redoc
_VERSIONS = {"swagger-ui": SWAGGER_UI_VERSION, "redoc": REDOC_VERSION}
FILES = {
    "swagger-ui/swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui/swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui/favicon-32x32.png": "image/png",
    "redoc/redoc.standalone.js": "text/javascript; charset=utf-8",
}
_ASSET_HEADERS = {
    "Cache-Control": "public, max-age=31536000, immutable",  # a new version is a new URL (`?v=`)
    "X-Content-Type-Options": "nosniff",
}


def _root(request: Request) -> str:
    """The app's root path (behind a proxy that mounts it below `/`), as FastAPI's own docs use it."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _asset_url(request: Request, path: str) -> str:
    """`/static/{path}?v=VERSION`."""
    return f"{_root(request)}/static/{path}?v={_VERSIONS[path.split('/', 1)[0]]}"


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=_root(request) + str(request.app.openapi_url),
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=_asset_url(request, "swagger-ui/swagger-ui-bundle.js"),
        swagger_css_url=_asset_url(request, "swagger-ui/swagger-ui.css"),
        swagger_favicon_url=_asset_url(request, "swagger-ui/favicon-32x32.png"),
        oauth2_redirect_url=_root(request) + "/docs/oauth2-redirect",
        # Else, on any host but localhost, it would fetch a badge from validator.swagger.io.
        swagger_ui_parameters={"validatorUrl": "none"},
    )


@router.get("/docs/oauth2-redirect")
async def swagger_ui_oauth2_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()  # self-contained: its script is inline


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    page = get_redoc_html(
        openapi_url=_root(request) + str(request.app.openapi_url),
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=_asset_url(request, "redoc/redoc.standalone.js"),
        redoc_favicon_url=_asset_url(request, "swagger-ui/favicon-32x32.png"),
        with_google_fonts=False,
    )
    # Redoc shows its maker's logo from cdn.redoc.ly (hidden if it fails to load): never fetch it.
    page.headers["Content-Security-Policy"] = "img-src 'self' data:"
    return page


@router.get("/static/{package}/{name}")
async def static_file(package: str, name: str) -> FileResponse:
    media_type = FILES.get(f"{package}/{name}")
    if media_type is None:
        raise ApiError(404, "not_found", f"no file /static/{package}/{name}")
    return FileResponse(STATIC_DIR / package / name, media_type=media_type, headers=_ASSET_HEADERS)
