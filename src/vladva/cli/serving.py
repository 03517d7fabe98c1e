"""`vladva index build|add`, `vladva search`, `vladva serve`: use a trained embedder on a collection."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from vladva.cli.errors import friendly_errors
from vladva.errors import UserError

# Plain help text (no rich markup): brackets in specs stay, long words are never cut.
index_app = typer.Typer(
    help="Build and grow a FAISS index of image embeddings.", no_args_is_help=True, rich_markup_mode=None
)


def _open_model(spec: str):
    from vladva.serve.models import load_embedder

    return load_embedder(spec)


def _check_words(embedder, texts: list[str], what: str) -> None:
    """Warn when the model cannot read the words of `texts` (vladva.data.vocab)."""
    from vladva.data.vocab import tokenizer_of, warn_unknown_tokens

    warn_unknown_tokens(tokenizer_of(embedder), texts, what)


def _print_report(report) -> None:
    typer.echo(report.summary(), err=True)
    for path, why in report.skipped[3:]:
        typer.echo(f"  skipped {path}: {why}", err=True)


@index_app.command("build")
@friendly_errors
def index_build(
    model: str = typer.Option(
        ...,
        "--model",
        help="Model spec: default (the shipped base), vladva:BASE[:WEIGHTS], zeroshot:BASE, clip:DIR or toy:colours; "
        "BASE may be default.",
    ),
    images: Path = typer.Option(
        ...,
        "--images",
        help="A folder of images (searched recursively), a JSONL manifest or a Karpathy-split JSON; "
        "a manifest's or JSON's captions and record ids are stored in the index.",
    ),
    out: Path = typer.Option(..., "--out", help="Index folder to create."),
    split: str = typer.Option("test", "--split", help="Karpathy split to index when --images is a Karpathy JSON."),
    kind: str = typer.Option("flat", "--kind", help="flat (exact), hnsw or ivf (approximate, for large collections)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per model call."),
    nlist: int = typer.Option(0, "--nlist", min=0, help="IVF cells (0 = automatic)."),
    nprobe: int = typer.Option(
        0, "--nprobe", min=0, help="IVF cells visited per query (0 = automatic, 1/8 of the cells)."
    ),
    hnsw_m: int = typer.Option(32, "--hnsw-m", min=2, help="HNSW neighbours per node."),
    ef_search: int = typer.Option(128, "--ef-search", min=1, help="HNSW candidates explored per query."),
) -> None:
    """Embed every readable image of a folder or manifest into a new index folder."""
    from vladva.serve.build import build_index
    from vladva.serve.index import IndexConfig

    config = IndexConfig(kind=kind, ivf_nlist=nlist, ivf_nprobe=nprobe, hnsw_m=hnsw_m, hnsw_ef_search=ef_search)
    embedder = _open_model(model)
    index, report = build_index(
        embedder, model, images, out, config, batch_size, show_progress=sys.stderr.isatty(), split=split
    )
    _check_words(
        embedder, [c for _, c in index.captions], f"the captions of {images} (searchable with --target captions)"
    )
    _print_report(report)
    typer.echo(f"index of {len(index)} images ({index.meta.config.kind}, dim {index.meta.dim}) written to {out}")


@index_app.command("add")
@friendly_errors
def index_add(
    index_dir: Path = typer.Argument(..., help="Index folder made by `vladva index build`."),
    images: Path = typer.Option(
        ...,
        "--images",
        help="A folder of images, a JSONL manifest or a Karpathy-split JSON; already indexed images are skipped.",
    ),
    model: str | None = typer.Option(None, "--model", help="Model spec (default: the one the index was built with)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    split: str = typer.Option("test", "--split", help="Karpathy split to add when --images is a Karpathy JSON."),
) -> None:
    """Add the images that the index does not hold yet."""
    from vladva.model_kinds import portable_spec
    from vladva.serve.build import update_index
    from vladva.serve.index import EmbeddingIndex

    spec = EmbeddingIndex.load(index_dir).meta.model
    if model is not None and portable_spec(model, index_dir) != portable_spec(spec, index_dir):
        raise UserError(
            f"{index_dir} was built with model {spec!r}; adding vectors of {model!r} would mix two embedding spaces"
        )
    embedder = _open_model(spec)
    index, report = update_index(
        index_dir, embedder, images, batch_size, show_progress=sys.stderr.isatty(), split=split
    )
    _check_words(embedder, [c for _, c in index.captions], f"the captions stored in {index_dir}")
    _print_report(report)
    typer.echo(f"index now holds {len(index)} images")


@friendly_errors
def search(
    query: str | None = typer.Argument(None, help="Text query (omit with --image)."),
    index_dir: Path = typer.Option(..., "--index", help="Index folder."),
    k: int = typer.Option(5, "-k", "--top-k", min=1, help="Number of results."),
    image: Path | None = typer.Option(None, "--image", help="Query by this image instead of text."),
    captions: Path | None = typer.Option(
        None, "--captions", help="Rank the lines of this text file instead of the indexed images (image → text)."
    ),
    target: str = typer.Option(
        "images",
        "--target",
        help="images, or captions (the --captions file, else the manifest captions stored in the index).",
    ),
    model: str | None = typer.Option(None, "--model", help="Model spec (default: the one the index was built with)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Search the index by text or by image; or rank captions for an image."""
    from vladva.serve.index import EmbeddingIndex
    from vladva.serve.search import check_query, search_index

    check_query(query, image, target)
    index = EmbeddingIndex.load(index_dir)
    embedder = _open_model(model or index.meta.model)
    if query is not None:
        _check_words(embedder, [query], f"the query {query!r}")
    result = search_index(index, embedder, query, image, k, target, captions, index_name=str(index_dir))
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=1))
        return
    label = f"image {image}" if image is not None else repr(query)
    if result.target == "captions":
        columns = ["rank", "score", "caption"] + (["ids"] if captions is None else [])
        _table(f"captions for {label} from {result.source}", columns, result.results)
    else:
        _table(f"top {k} of {len(index)} images for {label}", ["rank", "score", "path"], result.results)


def _table(title: str, columns: list[str], rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="right" if c in ("rank", "score") else "left", overflow="fold")
    for r in rows:
        table.add_row(*(f"{r[c]:.4f}" if c == "score" else str(r[c]) for c in columns))
    Console().print(table)


@friendly_errors
def serve(
    index_dir: Path = typer.Option(..., "--index", help="Index folder to search."),
    model: str | None = typer.Option(None, "--model", help="Model spec (default: the one the index was built with)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind; 127.0.0.1 keeps it on this machine."),
    port: int = typer.Option(8000, "--port", min=0, max=65535),
    max_batch: int = typer.Option(16, "--max-batch", min=1, help="Items per batched model call."),
    max_wait_ms: float = typer.Option(
        5.0, "--max-wait-ms", min=0.0, help="How long a request waits to share a model call."
    ),
    timeout_s: float = typer.Option(60.0, "--timeout", min=0.1, help="Per-request time limit in seconds."),
    max_body_mb: float = typer.Option(8.0, "--max-body-mb", min=0.001, help="Request body limit in MiB."),
    index_reload_s: float = typer.Option(
        2.0,
        "--index-reload",
        min=0.0,
        help="Seconds between looks for a version `vladva index add` committed (0: never).",
    ),
) -> None:
    """Serve the HTTP API and the web search page (FastAPI + uvicorn)."""
    from vladva.serve.index import LiveIndex
    from vladva.serve.models import embedding_dim
    from vladva.serve.search import dimension_mismatch
    from vladva.serve.service import ServiceSettings, create_app, run_service

    index = LiveIndex(index_dir)  # follows the versions `vladva index add` commits
    embedder = _open_model(model or index.current.meta.model)
    _check_words(embedder, [c for _, c in index.current.captions], f"the captions stored in {index_dir}")
    dim = embedding_dim(embedder)
    if dim != index.current.meta.dim:
        raise dimension_mismatch(dim, index.current, str(index_dir))
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"WARNING: binding {host} exposes the service (and every indexed image) to the network, "
            "with no authentication. Put it behind an authenticating proxy or use --host 127.0.0.1.",
            file=sys.stderr,
        )
    settings = ServiceSettings(
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        request_timeout_s=timeout_s,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        index_reload_s=index_reload_s,
    )
    app = create_app(index, embedder, settings)
    typer.echo(
        f"serving {len(index)} images from {index_dir} at http://{host}:{port}/ (OpenAPI spec at /openapi.json)",
        err=True,
    )
    run_service(app, host, port, settings)


def register(app: typer.Typer) -> None:
    app.add_typer(index_app, name="index")
    app.command("search")(search)
    app.command("serve")(serve)
