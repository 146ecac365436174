"""The ``clasp serve`` web app (FastAPI): a search page and its JSON API.

Routes:

- ``GET /``: the search page (``static/index.html``; 3Dmol.js is vendored under ``static/``).
- ``GET /api/info``: index size, checkpoint, alpha, whether structures can be shown, limits.
- ``GET /api/search?q=TEXT&k=10``: what ``clasp search --index I --json TEXT --top-k 10`` prints.
- ``POST /api/search/cif?k=10&name=FILE.cif``: the same for a structure query; the body is the
  CIF file's bytes.
- ``GET /api/cif?id=ID``: an indexed structure as a CIF file (P1 cell).

Bad input gets a JSON answer ``{"error": "..."}`` with a 4xx status and never stops the server:
400 for an empty query, a ``k`` outside ``1..N`` or a malformed parameter, 404 for an unknown
structure, 413 for a body over :attr:`Limits.max_upload_bytes` or a query over
:attr:`Limits.max_query_chars`, 422 for a CIF that cannot be read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from clasp_pl.serve.engine import InvalidQuery, SearchEngine

STATIC = Path(__file__).resolve().parent / "static"


@dataclass(frozen=True)
class Limits:
    """What one request may ask.

    Attributes:
        max_upload_bytes: largest request body (an uploaded CIF), bytes.
        max_query_chars: longest text query, characters.
    """

    max_upload_bytes: int = 1 << 20
    max_query_chars: int = 1000


class RequestError(Exception):
    """A request answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def create_app(engine: SearchEngine, limits: Limits = Limits()) -> FastAPI:
    """The app serving ``engine`` (its model is loaded already, once)."""
    app = FastAPI(title="CLaSP search", docs_url=None, redoc_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(RequestError)
    async def request_error(_: Request, error: RequestError) -> JSONResponse:
        return JSONResponse({"error": error.message}, status_code=error.status)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid_parameter(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in error.errors()
        )
        return JSONResponse({"error": f"bad parameter: {problems}"}, status_code=400)

    @app.middleware("http")
    async def refuse_large_bodies(request: Request, call_next) -> Response:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limits.max_upload_bytes:
            return _too_large(int(declared), limits)
        return await call_next(request)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/info")
    def info() -> dict:
        return {
            "count": len(engine),
            "checkpoint": Path(engine.ckpt).name,
            "alpha": engine.alpha,
            "alpha_source": engine.alpha_source,
            "structures": bool(engine.records),
            "limits": asdict(limits),
        }

    @app.get("/api/search")
    def search(q: str = "", k: int = Query(10)) -> dict:
        query = q.strip()
        if not query:
            raise RequestError(400, "empty query: type a few words, or upload a CIF file")
        if len(query) > limits.max_query_chars:
            raise RequestError(
                413, f"query of {len(query)} characters; the limit is {limits.max_query_chars}"
            )
        return engine.search_text(query, _checked_k(k, len(engine)))

    @app.post("/api/search/cif")
    async def search_cif(request: Request, k: int = Query(10), name: str = "query.cif") -> dict:
        checked = _checked_k(k, len(engine))
        data = await _read_body(request, limits)
        if not data.strip():
            raise RequestError(400, f"{name}: empty file; upload a CIF file")
        try:
            return await run_in_threadpool(engine.search_cif, data, name, checked)
        except InvalidQuery as error:
            raise RequestError(422, str(error)) from error

    @app.get("/api/cif")
    def cif(structure_id: str = Query(alias="id")) -> PlainTextResponse:
        text = engine.cif(structure_id)
        if text is None:
            reason = "no structure of that id" if engine.records else "the index has no records"
            raise RequestError(404, f"cannot show {structure_id!r}: {reason}")
        name = _file_name(structure_id)
        headers = {"Content-Disposition": f'inline; filename="{name}.cif"'}
        return PlainTextResponse(text, media_type="chemical/x-cif", headers=headers)

    return app


def _checked_k(k: int, size: int) -> int:
    if not 1 <= k <= size:
        raise RequestError(400, f"k={k}: ask for 1 to {size} hits (the index holds {size})")
    return k


async def _read_body(request: Request, limits: Limits) -> bytes:
    """The request body, refused with 413 once it passes the limit (a body without a declared
    length is counted as it streams)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_upload_bytes:
            raise RequestError(413, _too_large_message(size, limits))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large_message(size: int, limits: Limits) -> str:
    return f"request of {size:,} bytes or more; the limit is {limits.max_upload_bytes:,} bytes"


def _too_large(size: int, limits: Limits) -> JSONResponse:
    return JSONResponse({"error": _too_large_message(size, limits)}, status_code=413)


def _file_name(structure_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in structure_id) or "structure"
