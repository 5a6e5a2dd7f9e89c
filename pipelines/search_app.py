"""Text-to-video search as a web service: the dual encoder and the video index stay loaded, so a
query costs milliseconds instead of a Python start, a torch import and a model load.

    python -m pipelines.search_app serve [--data-root data] [--host 127.0.0.1] [--port 8080]
    python -m pipelines.search_app search "a red circle moves left" [-k 10] [--json]

Pages: `/` (a query box; hits play in the browser, each with its pseudo-caption, alt-text,
frame caption, score and a "more like this" link; `/?like=<key>`), `/partitions`,
`/partitions/<p>`. JSON: `/api/search?q=&k=`, `/api/similar?key=&k=`, `/api/partitions`,
`/api/partitions/<p>`, `/api/status`. Clips: `/clips/<partition>/<key>.mp4`, read out of the
shard tar by offset, with byte ranges so a browser can seek.

What it serves is what the pipeline made under the data root: video_index/index.duckdb, the
pseudo-caption dual encoder of seed 0 (checkpoints/dual_encoder/pseudo_captions/seed0),
clips/<p>.tar, and the catalog (alt-text; the current frame and pseudo captions). Each is read
again when its files change, so a re-materialized video_index is served without a restart.
Ranking is model_code.video_index.VideoSearch's, the same for the page, the API and `search_cli`.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import re
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote

from dagster import BetaWarning, PreviewWarning
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from resources.catalog import Catalog
from resources.storage import ArtifactStore, checked_name

warnings.filterwarnings("ignore", category=BetaWarning)  # the assets' decorators, as in definitions
warnings.filterwarnings("ignore", category=PreviewWarning)
log = logging.getLogger("vidistill.search")

MAX_QUERY_CHARS = 500  # a sentence or two; the text tower truncates far sooner
MAX_QUERY_STRING_BYTES = 8192
DEFAULT_K = 10
MAX_K = 100  # a page of hits; more is a bulk export, not a search
MATERIALIZE = (
    "materialize video_index (dagster asset materialize -m pipelines.definitions "
    "--select video_index), which needs the pseudo_captions dual encoder"
)


class SearchError(Exception):
    """A request the service cannot answer, with the HTTP status and a message for a person."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class Unsatisfiable(Exception):
    """A byte range that starts past the end of the clip."""


# --- request checks: one place, shared by the pages, the API and the CLI ----------------------


def query_params(raw: bytes) -> dict[str, str]:
    """The query string's parameters (the first of each name), percent-decoded as strict UTF-8
    (urllib.parse.parse_qs): a query that is not text is refused rather than searched as
    replacement characters."""
    if len(raw) > MAX_QUERY_STRING_BYTES:
        raise SearchError(
            400, f"the query string is {len(raw)} bytes; at most {MAX_QUERY_STRING_BYTES}"
        )
    try:
        parsed = parse_qs(
            raw.decode("latin-1"), keep_blank_values=True, encoding="utf-8", errors="strict"
        )
    except UnicodeDecodeError:
        raise SearchError(
            400, "the query string is not valid UTF-8 text: send the query percent-encoded as UTF-8"
        ) from None
    return {name: values[0] for name, values in parsed.items()}


def checked_query(text: str | None) -> str:
    """The query with its whitespace collapsed, or SearchError(400) if it is empty or long."""
    text = " ".join((text or "").split())
    if not text:
        raise SearchError(
            400,
            'empty query: describe the clip you are looking for, e.g. "a red circle moves left"',
        )
    if len(text) > MAX_QUERY_CHARS:
        raise SearchError(
            400, f"the query is {len(text)} characters long; at most {MAX_QUERY_CHARS}"
        )
    return text


def checked_k(value: str | int | None) -> int:
    """k as a whole number from 1 to MAX_K (DEFAULT_K when not given)."""
    if value is None or value == "":
        return DEFAULT_K
    text = str(value).strip()
    if not re.fullmatch(r"[0-9]{1,6}", text) or not 1 <= int(text) <= MAX_K:
        raise SearchError(400, f"k must be a whole number from 1 to {MAX_K}, not {value!r}")
    return int(text)


def checked_clip_name(name: str, what: str) -> str:
    try:
        return checked_name(name, what)
    except ValueError as e:
        raise SearchError(400, str(e)) from None


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte, inclusive, of a `Range: bytes=...` header over `size` bytes; None to
    send the whole clip (no header, or one this server ignores as RFC 9110 allows: another
    unit, several ranges, bad syntax). Unsatisfiable if the range starts at or past the end."""
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    spec = spec.strip()
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    match = re.fullmatch(r"([0-9]*)-([0-9]*)", spec)
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":  # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise Unsatisfiable
        return max(0, size - n), size - 1
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise Unsatisfiable
    return start, min(int(last), size - 1) if last else size - 1


def clip_url(partition: str, key: str) -> str:
    return f"/clips/{quote(partition, safe='')}/{quote(key, safe='')}.mp4"


# --- what the service holds ------------------------------------------------------------------


@dataclass(frozen=True)
class Notes:
    """What the catalog says of each clip: alt-text, the current frame caption and pseudo
    caption (sample 0), and the catalog's partitions with their clips in order."""

    alt_text: dict[str, str]
    frame_caption: dict[str, str]
    pseudo_caption: dict[str, str]
    partitions: dict[str, list[str]]


def _stamp(paths: Sequence[Path]) -> tuple:
    out = []
    for p in paths:
        try:
            st = p.stat()
            out.append((str(p), st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((str(p), None, None))
    return tuple(out)


def _sample0_captions(source: str, catalog: Catalog, store: ArtifactStore) -> dict[str, str]:
    """key -> caption of the captioner `source` stands for now (assets.captions'
    current_captions), sample 0; empty when that source is not captioned (yet)."""
    import duckdb

    from assets.captions import current_captions

    try:
        df = current_captions(source, catalog, store)
    except (ValueError, OSError, duckdb.Error):
        return {}
    df = df[df["sample"] == 0]
    return dict(zip(df["key"], df["caption"], strict=True))


class SearchService:
    """The loaded VideoSearch and the catalog's notes, each reloaded when its files change;
    the members of each shard (where each clip's bytes lie), read once per shard version."""

    def __init__(self, data_root: str | Path = "data"):
        self.store = ArtifactStore(root=str(data_root))
        self.catalog = Catalog(root=str(data_root))
        self.index_path = self.store.path("video_index", "index.duckdb")
        self.model_path = self.store.dual_encoder("pseudo_captions", seed=0)
        self._lock = threading.Lock()
        self._search: tuple[tuple, object] | None = None  # (stamp, VideoSearch or SearchError)
        self._notes: tuple[tuple, Notes] | None = None
        self._members: dict[Path, tuple[int, dict[str, tuple[int, int]]]] = {}

    # the model and the index

    def _search_stamp(self) -> tuple:
        model_files = [self.model_path / n for n in ("config.json", "lineage.json")]
        model_files += sorted(self.model_path.glob("*.safetensors"))
        return _stamp([self.index_path, *model_files])

    def search(self):
        """The loaded model_code.video_index.VideoSearch, or SearchError(503) saying what to
        materialize."""
        stamp = self._search_stamp()
        with self._lock:
            if self._search is None or self._search[0] != stamp:
                self._search = (stamp, self._load_search())
            loaded = self._search[1]
        if isinstance(loaded, SearchError):
            raise loaded
        return loaded

    def _load_search(self):
        from model_code.video_index import VideoSearch

        try:
            loaded = VideoSearch(self.index_path, self.model_path)
        except (OSError, ValueError) as e:
            log.warning("search unavailable: %s", e)
            return SearchError(503, f"search is not available: {e}. To search, {MATERIALIZE}.")
        log.info(
            "loaded %d clips from %s, model %s",
            len(loaded.index.keys),
            self.index_path,
            self.model_path,
        )
        return loaded

    def search_or_none(self):
        try:
            return self.search()
        except SearchError:
            return None

    # the catalog

    def _notes_stamp(self) -> tuple:
        root = Path(self.store.root).resolve()
        files = sorted(root.glob("clip_index/*.parquet")) + sorted(
            root.glob("captions/*/*.parquet")
        )
        files += [self.store.checkpoint(n) / "lineage.json" for n in ("image_vlm", "video_vlm")]
        return _stamp(files)

    def notes(self) -> Notes:
        stamp = self._notes_stamp()
        with self._lock:
            if self._notes is None or self._notes[0] != stamp:
                self._notes = (stamp, self._load_notes())
            return self._notes[1]

    def _load_notes(self) -> Notes:
        alt_text: dict[str, str] = {}
        partitions: dict[str, list[str]] = {}
        if self.catalog.has("clips"):
            clips = self.catalog.query(
                "SELECT key, partition, alt_text FROM clips ORDER BY partition, key"
            )
            for key, partition, alt in zip(
                clips["key"], clips["partition"], clips["alt_text"], strict=True
            ):
                alt_text[key] = alt
                partitions.setdefault(partition, []).append(key)
        return Notes(
            alt_text,
            _sample0_captions("frame_captions", self.catalog, self.store),
            _sample0_captions("pseudo_captions", self.catalog, self.store),
            partitions,
        )

    # answers

    def row(
        self, key: str, partition: str, caption: str, notes: Notes, score: float | None = None
    ) -> dict:
        row = {"key": key, "partition": partition}
        if score is not None:
            row["score"] = score
        return {
            **row,
            "caption": caption or notes.pseudo_caption.get(key),
            "alt_text": notes.alt_text.get(key),
            "frame_caption": notes.frame_caption.get(key),
            "video_url": clip_url(partition, key),
        }

    def results(self, query: str, k: int | str | None = DEFAULT_K) -> dict:
        """The search answer, as the API and the CLI give it."""
        query, k = checked_query(query), checked_k(k)
        hits = self.search().search(query, k)
        notes = self.notes()
        return {
            "query": query,
            "k": k,
            "results": [self.row(h.key, h.partition, h.caption, notes, h.score) for h in hits],
        }

    def similar(self, key: str | None, k: int | str | None = DEFAULT_K) -> dict:
        k = checked_k(k)
        if not key:
            raise SearchError(400, "key is missing: give the key of an indexed clip")
        if len(key) > 250:
            raise SearchError(400, f"key is {len(key)} characters long; at most 250")
        search = self.search()
        try:
            hits = search.similar(key, k)
        except KeyError:
            raise SearchError(404, f"no clip {key!r} in the video index") from None
        notes = self.notes()
        return {
            "key": key,
            "k": k,
            "results": [self.row(h.key, h.partition, h.caption, notes, h.score) for h in hits],
        }

    def partitions(self) -> dict:
        notes, search = self.notes(), self.search_or_none()
        indexed = search.index.partition_counts() if search else {}
        names = sorted(set(notes.partitions) | set(indexed))
        if not names:
            raise SearchError(
                503,
                "no clips to browse: materialize clip_shards (the catalog) "
                f"or video_index; to search, {MATERIALIZE}",
            )
        return {
            "partitions": [
                {
                    "partition": p,
                    "clips": len(notes.partitions.get(p, [])),
                    "indexed": indexed.get(p, 0),
                }
                for p in names
            ]
        }

    def partition(self, partition: str) -> dict:
        partition = checked_clip_name(partition, "partition")
        notes, search = self.notes(), self.search_or_none()
        indexed = {h.key: h for h in search.index.clips_of(partition)} if search else {}
        keys = notes.partitions.get(partition) or list(indexed)
        if not keys:
            raise SearchError(404, f"no partition {partition!r} in the catalog or the index")
        clips = [
            {
                **self.row(key, partition, indexed[key].caption if key in indexed else "", notes),
                "indexed": key in indexed,
            }
            for key in keys
        ]
        return {"partition": partition, "clips": clips}

    def status(self) -> dict:
        try:
            search = self.search()
        except SearchError as e:
            return {"ready": False, "message": e.message}
        return {
            "ready": True,
            "clips": len(search.index.keys),
            "index": str(self.index_path),
            "model": str(self.model_path),
            "model_version": search.model_version,
            "checkpoint_version": search.checkpoint_version,
            "stale": search.stale,
        }

    # clip bytes

    def clip_location(self, partition: str, key: str) -> tuple[Path, int, int]:
        """(shard path, offset, size) of the clip's mp4 member; SearchError 400/404."""
        partition = checked_clip_name(partition, "partition")
        key = checked_clip_name(key, "clip key")
        path = self.store.shard(partition)
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            raise SearchError(404, f"no shard for partition {partition!r}") from None
        with self._lock:
            cached = self._members.get(path)
        if cached is None or cached[0] != mtime:
            from model_code.shards import shard_members

            members = {m.key: m.files["mp4"] for m in shard_members(path, lambda reject: None)}
            cached = (mtime, members)
            with self._lock:
                self._members[path] = cached
        if key not in cached[1]:
            raise SearchError(404, f"no clip {key!r} in partition {partition!r}")
        offset, size = cached[1][key]
        return path, offset, size


def read_slice(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


# --- HTML ------------------------------------------------------------------------------------


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; max-width: 70em; }}
nav a {{ margin-right: 1em; }}
.error {{ color: #a00; background: #fee; padding: .5em; border: 1px solid #a00; }}
.warning {{ background: #ffd; padding: .5em; border: 1px solid #aa0; }}
.hit {{ display: flex; gap: 1em; margin: .8em 0; align-items: flex-start; }}
.hit dl {{ margin: 0; display: grid; grid-template-columns: 9em auto; }}
.hit dt {{ color: #666; }} .hit dd {{ margin: 0; }}
table {{ border-collapse: collapse; }}
td, th {{ border-bottom: 1px solid #ddd; padding: .3em; text-align: left; }}
input[name=q] {{ width: 30em; }}
</style></head>
<body><nav><a href="/">search</a><a href="/partitions">partitions</a></nav>
<h1>{title}</h1>
{body}
</body></html>
"""


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _video(url: str) -> str:
    return (
        f'<video controls preload="metadata" width="192" src="{_e(url)}">'
        f'<a href="{_e(url)}">clip</a></video>'
    )


def _like_link(key: str, k: int = DEFAULT_K) -> str:
    return f'<a class="like" href="/?like={quote(key, safe="")}&amp;k={k}">more like this</a>'


def search_form(query: str = "", k: int | str = DEFAULT_K) -> str:
    return (
        f'<form method="get" action="/"><input name="q" value="{_e(query)}" '
        f'maxlength="{MAX_QUERY_CHARS}" placeholder="a red circle moves left" autofocus> '
        f'k <input name="k" type="number" min="1" max="{MAX_K}" value="{_e(k)}"> '
        '<button type="submit">search</button></form>'
    )


def hits_html(results: list[dict], k: int) -> str:
    if not results:
        return "<p>no clips in the index</p>"
    items = []
    for r in results:
        items.append(
            f'<li class="hit" data-key="{_e(r["key"])}">{_video(r["video_url"])}<dl>'
            f'<dt>score</dt><dd class="score">{r["score"]:.4f}</dd>'
            f'<dt>pseudo-caption</dt><dd class="caption">{_e(r["caption"])}</dd>'
            f'<dt>alt-text</dt><dd class="alt-text">{_e(r["alt_text"])}</dd>'
            f'<dt>frame caption</dt><dd class="frame-caption">{_e(r["frame_caption"])}</dd>'
            f'<dt>key</dt><dd class="key">{_e(r["key"])}</dd>'
            f'<dt>partition</dt><dd class="partition"><a href="/partitions/'
            f'{quote(r["partition"], safe="")}">{_e(r["partition"])}</a></dd>'
            f"<dt></dt><dd>{_like_link(r['key'], k)}</dd></dl></li>"
        )
    return '<ol class="hits">' + "".join(items) + "</ol>"


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(PAGE.format(title=_e(title), body=body), status_code=status)


def error_html(message: str) -> str:
    return f'<p class="error" role="alert">{_e(message)}</p>'


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
                body = f"<p>clips like <code>{_e(answer['key'])}</code></p>" + hits_html(
                    answer["results"], answer["k"]
                )
            elif "q" in p:
                answer = service.results(query, k)
                body = hits_html(answer["results"], answer["k"])
            status_note = service.status()
            if status_note.get("stale"):
                body = (
                    f'<p class="warning">the index was built by dual encoder '
                    f"{_e(status_note['model_version'])}, the checkpoint is now "
                    f"{_e(status_note['checkpoint_version'])}: {_e(MATERIALIZE)} again</p>" + body
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
            f'<tr><td><a href="/partitions/{quote(r["partition"], safe="")}">{_e(r["partition"])}'
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
            f'<tr class="clip" data-key="{_e(c["key"])}"><td>{_video(c["video_url"])}</td>'
            f'<td class="key">{_e(c["key"])}</td><td class="alt-text">{_e(c["alt_text"])}</td>'
            f'<td class="frame-caption">{_e(c["frame_caption"])}</td>'
            f'<td class="caption">{_e(c["caption"])}</td>'
            f"<td>{_like_link(c['key']) if c['indexed'] else 'not indexed'}</td></tr>"
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
