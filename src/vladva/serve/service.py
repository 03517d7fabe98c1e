"""The HTTP service: embed texts and images, search the index, serve the web page.

`create_app(index, embedder, settings)` returns a FastAPI app; `vladva serve` runs it with
uvicorn. Requests go through a body-size limit and a time limit; model work goes through two
micro-batchers (texts, images) that share one lock, so concurrent requests share model calls.

`/search` answers a text, an uploaded image or an indexed image's id ("more like this"), and says
how long it took (`timings_ms`); `/examples` offers example queries from the stored captions.

Errors are JSON ``{"detail": "..."}``: 400 malformed request, body or unreadable image, 404 unknown
image id, 413 body or image too large, 414 URL too long, 415 unsupported content type, 422 invalid
values, 431 headers too large, 504 too slow. `run_service` serves an app with uvicorn through
`head_limited_protocol`, which answers the request-head errors before the app sees the request.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import tempfile
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from vladva.embedder import Embedder
from vladva.serve.batching import BatcherConfig, MicroBatcher
from vladva.serve.index import EmbeddingIndex, LiveIndex

STATIC_DIR = Path(__file__).parent / "static"
# Offered by /examples when the index stores no captions (built from a folder): the demo's world.
DEFAULT_EXAMPLES = ("a red circle", "a blue square", "a green triangle", "yellow")
MAX_EXAMPLE_CHARS = 80  # longer captions make poor clickable examples


@dataclass
class ServiceSettings:
    """Limits and batching of the service; every limit answers with a clear 4xx, never a crash."""

    max_body_bytes: int = 8 * 1024 * 1024  # whole request body, uploads included
    max_image_pixels: int = 16 * 1024 * 1024  # stricter than vladva.data.images.MAX_PIXELS
    max_images: int = 16  # images per /embed/image request
    max_texts: int = 64  # texts per /embed/text request
    max_text_chars: int = 2000  # characters per text
    max_k: int = 100  # results per /search
    default_k: int = 10
    request_timeout_s: float = 60.0
    max_batch: int = 16  # items per model call
    max_wait_ms: float = 5.0  # how long a request waits for others to share its model call
    max_head_bytes: int = 64 * 1024  # request line (URL) + headers; longer: 414 / 431
    index_reload_s: float = 2.0  # how often to look for a new committed index version (0: never)


def _error_response(status: int, detail: str):
    return JSONResponse({"detail": detail}, status_code=status)


class _HttpMiddleware:
    """ASGI middleware that acts on HTTP requests (`handle`) and passes anything else through."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        return await self.handle(scope, receive, send)

    async def handle(self, scope, receive, send):
        raise NotImplementedError


class BodySizeLimit(_HttpMiddleware):
    """ASGI middleware: 413 when the body is declared or turns out larger than `max_bytes`."""

    def __init__(self, app, max_bytes: int):
        super().__init__(app)
        self.max_bytes = max_bytes

    async def handle(self, scope, receive, send):
        too_large = f"request body is larger than the limit of {self.max_bytes} bytes"
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _error_response(413, too_large)(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # a chunked body with no Content-Length
                    raise HTTPException(413, too_large)
            return message

        await self.app(scope, limited_receive, send)


class RequestTimeLimit(_HttpMiddleware):
    """ASGI middleware: 504 when a request takes longer than `seconds` (before its response starts)."""

    def __init__(self, app, seconds: float):
        super().__init__(app)
        self.seconds = seconds

    async def handle(self, scope, receive, send):
        started = False

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, receive, tracking_send), self.seconds)
        except TimeoutError:
            if not started:
                detail = f"request took longer than the limit of {self.seconds:g} s"
                await _error_response(504, detail)(scope, receive, send)


# How long a refused connection keeps reading (and dropping) what the client still sends, so the
# client reads the error instead of a connection reset (closing with unread data sends a TCP RST).
LINGER_S = 2.0


def head_limited_protocol(max_head_bytes: int):
    """A uvicorn HTTP/1.1 protocol class (h11) that refuses a request line over `max_head_bytes`
    with 414 and headers over it with 431, and answers those and malformed requests (400) with a
    JSON `{"detail": ...}` and a lingering close, so even a client still sending a 1 MB URL reads
    the status instead of a reset connection."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeadLimitedProtocol(H11Protocol):
        draining = False

        def data_received(self, data: bytes) -> None:
            if self.draining:
                return
            if self.conn.their_state is h11.IDLE:  # between requests: data is a request head
                head = self.conn.trailing_data[0] + data
                if len(head) > max_head_bytes and not _head_ends_within(head, max_head_bytes):
                    if b"\n" not in head[:max_head_bytes]:
                        self.refuse(414, f"request line (URL) is longer than the limit of {max_head_bytes} bytes")
                    else:
                        self.refuse(431, f"request headers are larger than the limit of {max_head_bytes} bytes")
                    return
            super().data_received(data)

        def send_400_response(self, msg: str) -> None:
            self.refuse(400, f"malformed HTTP request ({msg.rstrip('.')})")

        def refuse(self, status: int, detail: str) -> None:
            self.logger.warning("refused a request: %d %s", status, detail)
            body = json.dumps({"detail": detail}).encode()
            head = (
                f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
            )
            self.transport.write(head.encode("ascii") + body)
            self.draining = True
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)

    return HeadLimitedProtocol


def _head_ends_within(data: bytes, limit: int) -> bool:
    """Whether the blank line that ends a request head (CRLF CRLF, or bare LF LF) is in `data[:limit]`."""
    window = data[: limit + 4]
    return b"\n\r\n" in window or b"\n\n" in window


def run_service(app, host: str, port: int, settings: ServiceSettings, log_level: str = "info") -> None:
    """Serve `app` with uvicorn on `host:port` (blocks), with the request-head limit of `settings`."""
    import uvicorn

    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=head_limited_protocol(settings.max_head_bytes),
        # h11's own limit on an unfinished head stays above ours, so ours answers first.
        h11_max_incomplete_event_size=settings.max_head_bytes + 1024,
    )


def decode_image(data: bytes, name: str, max_pixels: int):
    """Bytes of an uploaded image to an RGB PIL image, via `vladva.data.images.load_image` (same
    checks and conversions as for files). Raises HTTPException 400 (unreadable) or 413 (too many pixels)."""
    from vladva.data.images import ImageLoadError, load_image

    if not data:
        raise HTTPException(400, f"upload {name!r} is empty")
    with tempfile.NamedTemporaryFile(prefix="vladva-upload-") as f:
        f.write(data)
        f.flush()
        try:
            return load_image(f.name, max_pixels=max_pixels)
        except ImageLoadError as e:
            reason = str(e).removeprefix(f"{f.name}: ").replace(f.name, name)
            status = 413 if "above the limit" in reason else 400
            raise HTTPException(status, f"upload {name!r}: {reason}") from None


def _decode_base64(text, what: str) -> bytes:
    if not isinstance(text, str):
        raise HTTPException(422, f"{what} must be a base64 string")
    if text.startswith("data:") and "," in text:  # a data URL as the browser's FileReader makes it
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(400, f"{what} is not valid base64") from None


async def _read_json(request, allowed: set[str]) -> dict:
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HTTPException(400, f"request body is not valid JSON ({e})") from None
    if not isinstance(body, dict):
        raise HTTPException(422, f"request body must be a JSON object, got {type(body).__name__}")
    unknown = set(body) - allowed
    if unknown:
        raise HTTPException(422, f"unknown field(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    return body


def _unknown_words(embedder, text: str) -> list[str]:
    """The words of a text query that the embedder's tokenizer maps to its unknown token (they
    do not take part in the search), most frequent first; [] for a tokenizer without one."""
    from vladva.data.vocab import tokenizer_of, unknown_token_rate

    tokenizer = tokenizer_of(embedder)
    return [] if tokenizer is None else unknown_token_rate(tokenizer, [text])[1]


def example_queries(index: EmbeddingIndex, n: int) -> tuple[list[str], str]:
    """Up to `n` distinct example queries and where they came from: `"captions"` (the shortest
    caption of entries spread evenly over the index, so the examples cover it; captions over
    `MAX_EXAMPLE_CHARS` are left out), else `"default"` (`DEFAULT_EXAMPLES`, for an index built
    from a folder)."""
    captioned = [e for e in index.entries if any(len(c) <= MAX_EXAMPLE_CHARS for c in e.captions)]
    # n entries evenly spaced over the index first, so the examples span the collection; then the
    # rest in order, to fill in for repeated captions.
    spread = [captioned[j * len(captioned) // n] for j in range(min(n, len(captioned)))]
    picked: list[str] = []
    for entry in spread + captioned:
        caption = min(entry.captions, key=len)
        if caption not in picked:
            picked.append(caption)
        if len(picked) == n:
            break
    if picked:
        return picked, "captions"
    return list(DEFAULT_EXAMPLES[:n]), "default"


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _content_kind(request) -> str:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json" or ctype.endswith("+json"):
        return "json"
    if ctype == "multipart/form-data":
        return "multipart"
    raise HTTPException(
        415, f"content type {ctype or '(none)'!r} not supported; send application/json or multipart/form-data"
    )


def _check_k(k, settings: ServiceSettings) -> int:
    try:
        k = int(k)
    except (TypeError, ValueError):
        raise HTTPException(422, f"k must be an integer, got {k!r}") from None
    if not 1 <= k <= settings.max_k:
        raise HTTPException(422, f"k must be between 1 and {settings.max_k}, got {k}")
    return k


def _check_texts(texts, settings: ServiceSettings) -> list[str]:
    if not isinstance(texts, list) or not texts:
        raise HTTPException(422, "texts must be a non-empty list of strings")
    if len(texts) > settings.max_texts:
        raise HTTPException(413, f"{len(texts)} texts in one request; the limit is {settings.max_texts}")
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise HTTPException(422, f"texts[{i}] must be a non-empty string")
        if len(t) > settings.max_text_chars:
            raise HTTPException(413, f"texts[{i}] has {len(t)} characters; the limit is {settings.max_text_chars}")
        try:  # a JSON escape like "\\udc80" decodes to a lone surrogate, which tokenizers cannot encode
            t.encode("utf-8")
        except UnicodeEncodeError as e:
            raise HTTPException(
                422, f"texts[{i}] is not valid Unicode (lone surrogate at character {e.start})"
            ) from None
    return [t.strip() for t in texts]


_JSON_OR_UPLOAD = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
            },
        },
    }
}


def create_app(index: EmbeddingIndex | LiveIndex, embedder: Embedder, settings: ServiceSettings | None = None):
    """The FastAPI app over `index` (searched) and `embedder` (queries). Model calls are batched.
    With a `LiveIndex` (a folder), a version that `vladva index add` commits is picked up within
    `settings.index_reload_s`; requests are answered from the previous version meanwhile."""
    import numpy as np

    settings = settings or ServiceSettings()
    live = index if isinstance(index, LiveIndex) else LiveIndex(None, index)
    batching = BatcherConfig(max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms)
    model_lock = threading.Lock()  # one model, two batchers: never two forward passes at once
    text_batcher = MicroBatcher(lambda texts: embedder.encode_texts(texts).numpy(), batching, model_lock)
    image_batcher = MicroBatcher(lambda images: embedder.encode_images(images).numpy(), batching, model_lock)

    async def follow_index() -> None:
        while True:
            await asyncio.sleep(settings.index_reload_s)
            try:  # loading runs in a thread: searches go on from the current version meanwhile
                await asyncio.to_thread(live.refresh)
            except Exception as e:  # a bad new version: keep serving the one we have
                logging.getLogger(__name__).warning("index reload failed, still serving the previous version: %s", e)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        current = live.current
        if len(current):  # FAISS starts its threads on the first search; do it before the first user's
            await asyncio.to_thread(current.search, np.zeros((1, current.meta.dim), dtype=np.float32), 1)
        follower = None
        if live.directory is not None and settings.index_reload_s > 0:
            follower = asyncio.get_running_loop().create_task(follow_index())
        yield
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        await text_batcher.close()
        await image_batcher.close()

    app = FastAPI(
        lifespan=lifespan,
        # FastAPI's /docs and /redoc pages load scripts from a CDN; the service stays offline.
        docs_url=None,
        redoc_url=None,
        title="vladva",
        summary="Search images by text or by example with a VladVA embedding model.",
        version=_version(),
    )
    app.state.index, app.state.embedder, app.state.settings = live, embedder, settings
    app.state.text_batcher, app.state.image_batcher = text_batcher, image_batcher
    # Added last = outermost: the time limit covers everything, the size limit guards the body.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestTimeLimit, seconds=settings.request_timeout_s)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    async def images_from_request(request: Request, allow_many: bool) -> tuple[list, list[str], dict]:
        """Decoded images, their names, and the other fields of a JSON or multipart body."""
        kind = _content_kind(request)
        raw: list[tuple[bytes, str]] = []
        if kind == "multipart":
            form = await request.form(max_files=settings.max_images, max_fields=8)
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            for upload in form.getlist("file"):
                if isinstance(upload, str):
                    raise HTTPException(422, "field 'file' must be a file upload")
                raw.append((await upload.read(), upload.filename or "upload"))
        else:
            fields = await _read_json(request, {"image_base64", "images_base64", "image_id", "k", "text"})
            if "image_base64" in fields:
                raw.append((_decode_base64(fields.pop("image_base64"), "image_base64"), "image_base64"))
            many = fields.pop("images_base64", None)
            if many is not None:
                if not isinstance(many, list):
                    raise HTTPException(422, "images_base64 must be a list of base64 strings")
                raw += [(_decode_base64(b, f"images_base64[{i}]"), f"images_base64[{i}]") for i, b in enumerate(many)]
        if not raw:
            return [], [], fields
        if len(raw) > (settings.max_images if allow_many else 1):
            raise HTTPException(
                413, f"{len(raw)} images in one request; the limit is {settings.max_images if allow_many else 1}"
            )
        images = [await asyncio.to_thread(decode_image, data, name, settings.max_image_pixels) for data, name in raw]
        return images, [name for _, name in raw], fields

    @app.get("/health")
    async def health() -> dict:
        """Liveness and what is loaded (`version`: the index version being searched)."""
        index = live.current
        return {
            "status": "ok",
            "model": index.meta.model,
            "embedder": getattr(embedder, "name", type(embedder).__name__),
            "dim": index.meta.dim,
            "kind": index.meta.config.kind,
            "images": len(index),
            "version": index.meta.version,
        }

    @app.post("/embed/text")
    async def embed_text(request: Request) -> dict:
        """Body `{"texts": ["...", ...]}` → `{"embeddings": (n, dim) L2-normalised}`."""
        if _content_kind(request) != "json":
            raise HTTPException(415, 'send texts as application/json: {"texts": [...]}')
        body = await _read_json(request, {"texts"})
        texts = _check_texts(body.get("texts"), settings)
        vectors = await text_batcher.submit_many(texts)
        return {"model": live.current.meta.model, "dim": len(vectors[0]), "embeddings": [v.tolist() for v in vectors]}

    @app.post("/embed/image", openapi_extra=_JSON_OR_UPLOAD)
    async def embed_image(request: Request) -> dict:
        """Multipart field(s) `file`, or JSON `{"image_base64": ...}` / `{"images_base64": [...]}`."""
        images, names, fields = await images_from_request(request, allow_many=True)
        if any(fields.get(key) is not None for key in ("k", "text", "image_id")):
            raise HTTPException(422, "/embed/image takes only images")
        if not images:
            raise HTTPException(422, "no image given: upload field 'file' or JSON 'image_base64'")
        vectors = await image_batcher.submit_many(images)
        return {
            "model": live.current.meta.model,
            "dim": len(vectors[0]),
            "names": names,
            "embeddings": [v.tolist() for v in vectors],
        }

    async def indexed_image(image_id) -> tuple[list, int]:
        """The indexed image with this id, decoded, for a "more like this" query."""
        from vladva.data.images import ImageLoadError, load_image

        if isinstance(image_id, str) and image_id.strip().lstrip("-").isdigit():  # a multipart field
            image_id = int(image_id)
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            raise HTTPException(422, f"image_id must be an integer, got {image_id!r}")
        entry = live.current.entry(image_id)
        if entry is None:
            raise HTTPException(404, f"no indexed image with id {image_id}")
        try:
            return [await asyncio.to_thread(load_image, entry.path)], image_id
        except ImageLoadError as e:
            raise HTTPException(404, f"indexed image {image_id} cannot be read: {e}") from None

    @app.post("/search", openapi_extra=_JSON_OR_UPLOAD)
    async def search(request: Request) -> dict:
        """JSON `{"text": "...", "k": 10}`, `{"image_base64": ..., "k": 10}` or `{"image_id": 13, "k": 10}`
        (more like an indexed image, which is left out of its own results), or multipart `file` + `k`.
        Returns the top-k indexed images (rank, score (cosine), id, path, url, captions, record_id)
        and `timings_ms` (`embed`: queue + model, `search`: index, `total`: the whole request)."""
        started = time.perf_counter()
        images, names, fields = await images_from_request(request, allow_many=False)
        k = _check_k(fields.get("k", settings.default_k), settings)
        text, image_id = fields.get("text"), fields.get("image_id")
        given = [
            what
            for what, there in (("text", text is not None), ("an image", images), ("image_id", image_id is not None))
            if there
        ]
        if len(given) > 1:
            raise HTTPException(422, f"give one query, not {' and '.join(given)} together")
        if image_id is not None:
            images, image_id = await indexed_image(image_id)
            query = {"image_id": image_id}
        elif images:
            query = {"image": names[0]}
        elif text is not None:
            query = {"text": text}
        else:
            raise HTTPException(
                422, "no query: give 'text', an image ('file' upload or 'image_base64') or an 'image_id'"
            )
        embed_start = time.perf_counter()
        if images:
            vector = (await image_batcher.submit_many(images))[0]
        else:
            vector = (await text_batcher.submit_many(_check_texts([text], settings)))[0]
        search_start = time.perf_counter()
        hits = live.current.search(np.asarray(vector, dtype=np.float32)[None], k + (image_id is not None))[0]
        if image_id is not None:  # "more like this" shows the others, not the image itself
            hits = [h for h in hits if h.id != image_id][:k]
        done = time.perf_counter()
        results = [
            {
                "rank": rank,
                "score": round(h.score, 6),
                "id": h.id,
                "path": h.path,
                "url": f"/images/{h.id}",
                "captions": h.captions,
                "record_id": h.record_id,
            }
            for rank, h in enumerate(hits, 1)
        ]
        timings = {"embed": _ms(search_start - embed_start), "search": _ms(done - search_start)}
        timings["total"] = _ms(done - started)
        answer = {"query": query, "k": k, "results": results, "timings_ms": timings}
        if text is not None:  # words the model's tokenizer cannot read are ignored by the search: say which
            answer["unknown_words"] = _unknown_words(embedder, text)
        return answer

    @app.get("/examples")
    async def examples(n: int = 6) -> dict:
        """Up to `n` (1 to 20) example queries: stored captions spread over the index (`source`:
        "captions"), or a fixed list when the index has none (`source`: "default")."""
        if not 1 <= n <= 20:
            raise HTTPException(422, f"n must be between 1 and 20, got {n}")
        texts, source = example_queries(live.current, n)
        return {"examples": texts, "source": source}

    @app.get("/images/{image_id}")
    async def image(image_id: int):
        """The indexed image file with this id (only indexed files are served)."""
        entry = live.current.entry(image_id)
        if entry is None:
            raise HTTPException(404, f"no indexed image with id {image_id}")
        if not Path(entry.path).is_file():
            raise HTTPException(404, f"indexed image {image_id} is gone from disk: {entry.path}")
        return FileResponse(entry.path)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    return app


def _version() -> str:
    from vladva import __version__

    return __version__
