"""Text-to-video search as a web service: the dual encoder and the video index stay loaded, so a
query costs milliseconds instead of a Python start, a torch import and a model load.

    python -m pipelines.search.app serve [--data-root data] [--host 127.0.0.1] [--port 8080]
    python -m pipelines.search.app search "a red circle moves left" [-k 10] [--json]

Pages: `/` (a query box; hits play in the browser, each with its pseudo-caption, alt-text,
frame caption, score and a "more like this" link; `/?like=<key>`), `/partitions`,
`/partitions/<p>`. JSON: `/api/search?q=&k=`, `/api/similar?key=&k=`, `/api/partitions`,
`/api/partitions/<p>`, `/api/status`. Clips: `/clips/<partition>/<key>.mp4`, read out of the
shard tar by offset, with byte ranges so a browser can seek.

What it serves is what the pipeline made under the data root: video_index/index.duckdb, the
pseudo-caption dual encoder of seed 0 (checkpoints/dual_encoder/pseudo_captions/seed0),
clips/<p>.tar, and the catalog (alt-text; the current frame and pseudo captions). Each is read
again when its files change, so a re-materialized video_index is served without a restart.
Ranking is model_code.inference.video_index.VideoSearch's, the same for the page, the API and
`search_cli`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

from dagster import BetaWarning, PreviewWarning
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pipelines.search.inputs import DEFAULT_K, SearchError, Unsatisfiable, byte_range, query_params
from pipelines.search.pages import (
    error_html,
    esc,
    hits_html,
    like_link,
    page,
    search_form,
    video_html,
)
from pipelines.search.service import MATERIALIZE, SearchService, read_slice

warnings.filterwarnings("ignore", category=BetaWarning)  # the assets' decorators, as in definitions
warnings.filterwarnings("ignore", category=PreviewWarning)
log = logging.getLogger("vidistill.search")


# --- the app ---------------------------------------------------------------------------------


def create_app(
    data_root: str | Path = "data", service: SearchService | None = None, preload: bool = True
) -> Starlette:
    """The search app over one data root. With `preload`, the model and the index load at
    start-up (in the lifespan), so the first query is as fast as the rest."""
    service = service or SearchService(data_root)

    def params(request: Request) -> dict[str, str]:
        return query_params(request.scope.get("query_string", b""))

    def api(answer: Callable[[dict[str, str]], dict]) -> Callable[[Request], Response]:
        def endpoint(request: Request) -> Response:
            try:
                return JSONResponse(answer({**params(request), **request.path_params}))
            except SearchError as e:
                return JSONResponse({"error": e.message}, status_code=e.status)

        return endpoint

    def home(request: Request) -> Response:
        query, k, body, status = "", DEFAULT_K, "", 200
        try:
            p = params(request)
            query, k = p.get("q", ""), p.get("k", DEFAULT_K)
            if "like" in p:
                answer = service.similar(p["like"], k)
                body = f"<p>clips like <code>{esc(answer['key'])}</code></p>" + hits_html(
                    answer["results"], answer["k"]
                )
            elif "q" in p:
                answer = service.results(query, k)
                body = hits_html(answer["results"], answer["k"])
            status_note = service.status()
            if status_note.get("stale"):
                body = (
                    f'<p class="warning">the index was built by dual encoder '
                    f"{esc(status_note['model_version'])}, the checkpoint is now "
                    f"{esc(status_note['checkpoint_version'])}: {esc(MATERIALIZE)} again</p>" + body
                )
            elif not status_note["ready"] and not body:
                body, status = error_html(status_note["message"]), 503
        except SearchError as e:
            body, status = error_html(e.message), e.status
        return page("video search", search_form(query, k) + body, status)

    def partitions_page(request: Request) -> Response:
        try:
            rows = service.partitions()["partitions"]
        except SearchError as e:
            return page("partitions", error_html(e.message), e.status)
        body = "".join(
            f'<tr><td><a href="/partitions/{quote(r["partition"], safe="")}">{esc(r["partition"])}'
            f"</a></td><td>{r['clips']}</td><td>{r['indexed']}</td></tr>"
            for r in rows
        )
        return page(
            "partitions",
            "<table><tr><th>partition</th><th>clips in the catalog</th>"
            f"<th>indexed</th></tr>{body}</table>",
        )

    def partition_page(request: Request) -> Response:
        name = request.path_params["partition"]
        try:
            clips = service.partition(name)["clips"]
        except SearchError as e:
            return page(f"partition {name}", error_html(e.message), e.status)
        body = "".join(
            f'<tr class="clip" data-key="{esc(c["key"])}"><td>{video_html(c["video_url"])}</td>'
            f'<td class="key">{esc(c["key"])}</td><td class="alt-text">{esc(c["alt_text"])}</td>'
            f'<td class="frame-caption">{esc(c["frame_caption"])}</td>'
            f'<td class="caption">{esc(c["caption"])}</td>'
            f"<td>{like_link(c['key']) if c['indexed'] else 'not indexed'}</td></tr>"
            for c in clips
        )
        return page(
            f"partition {name}",
            "<table><tr><th>clip</th><th>key</th><th>alt-text</th>"
            "<th>frame caption</th><th>pseudo-caption</th><th></th></tr>"
            f"{body}</table>",
        )

    def clip(request: Request) -> Response:
        try:
            path, offset, size = service.clip_location(
                request.path_params["partition"], request.path_params["key"]
            )
        except SearchError as e:
            return JSONResponse({"error": e.message}, status_code=e.status)
        headers = {"Accept-Ranges": "bytes"}
        try:
            wanted = byte_range(request.headers.get("range"), size)
        except Unsatisfiable:
            return JSONResponse(
                {
                    "error": f"range {request.headers.get('range')!r} starts past "
                    f"the clip's {size} bytes"
                },
                status_code=416,
                headers={**headers, "Content-Range": f"bytes */{size}"},
            )
        if wanted is None:
            return Response(read_slice(path, offset, size), media_type="video/mp4", headers=headers)
        first, last = wanted
        return Response(
            read_slice(path, offset + first, last - first + 1),
            status_code=206,
            media_type="video/mp4",
            headers={**headers, "Content-Range": f"bytes {first}-{last}/{size}"},
        )

    def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        detail = getattr(exc, "detail", None) or "internal error; see the server's log"
        if request.url.path.split("/")[1] in ("api", "clips"):
            return JSONResponse({"error": detail}, status_code=status)
        return page("video search", error_html(detail), status)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        if preload:
            import anyio.to_thread

            await anyio.to_thread.run_sync(service.search_or_none)
        yield

    app = Starlette(
        routes=[
            Route("/", home),
            Route("/partitions", partitions_page),
            Route("/partitions/{partition}", partition_page),
            Route("/api/search", api(lambda p: service.results(p.get("q"), p.get("k")))),
            Route("/api/similar", api(lambda p: service.similar(p.get("key"), p.get("k")))),
            Route("/api/partitions", api(lambda p: service.partitions())),
            Route("/api/partitions/{partition}", api(lambda p: service.partition(p["partition"]))),
            Route("/api/status", api(lambda p: service.status())),
            Route("/clips/{partition}/{key}.mp4", clip),
        ],
        exception_handlers={HTTPException: http_error, 500: http_error},
        lifespan=lifespan,
    )
    app.state.service = service
    return app


# --- command line ----------------------------------------------------------------------------


def serve(
    data_root: str = "data", host: str = "127.0.0.1", port: int = 8080, threads: int | None = None
) -> None:
    """Serve the search page and API until interrupted (uvicorn). `threads`: torch's
    intra-op threads (None: torch's default)."""
    import uvicorn

    if not 0 <= port <= 65535:
        raise ValueError(f"port must be from 0 to 65535, not {port}")
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(data_root), host=host, port=port)


def search_cli(
    query: str | Sequence[str], k: int = DEFAULT_K, json_out: bool = False, data_root: str = "data"
) -> int:
    """Print the top-k clips for a query (a table, or the API's JSON); the exit status: 0, 2 for
    a bad query or k, 1 when there is no index or model to search."""
    text = query if isinstance(query, str) else " ".join(query)
    try:
        answer = SearchService(data_root).results(text, k)
    except SearchError as e:
        print(f"vidistill search: {e.message}", file=sys.stderr)
        return 2 if e.status == 400 else 1
    if json_out:
        print(json.dumps(answer, indent=1))
        return 0
    rows = [("rank", "score", "key", "partition", "pseudo-caption", "alt-text")]
    rows += [
        (
            str(i),
            f"{r['score']:.4f}",
            r["key"],
            r["partition"],
            r["caption"] or "",
            r["alt_text"] or "",
        )
        for i, r in enumerate(answer["results"], 1)
    ]
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Search the clips with a sentence.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_args = commands.add_parser("serve", help="serve the search page and API")
    serve_args.add_argument("--data-root", default="data")
    serve_args.add_argument("--host", default="127.0.0.1")
    serve_args.add_argument("--port", type=int, default=8080)
    serve_args.add_argument("--threads", type=int, default=None, help="torch threads")
    search_args = commands.add_parser("search", help="print the top-k clips for a query")
    search_args.add_argument("query", nargs="+")
    search_args.add_argument("-k", type=int, default=DEFAULT_K)
    search_args.add_argument("--json", action="store_true", dest="json_out")
    search_args.add_argument("--data-root", default="data")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.data_root, args.host, args.port, args.threads)
        return 0
    return search_cli(args.query, args.k, args.json_out, args.data_root)


if __name__ == "__main__":
    sys.exit(main())
