"""The search page's HTML: the query form, the hits with their videos and notes, errors."""

from __future__ import annotations

import html
from urllib.parse import quote

from starlette.responses import HTMLResponse

from pipelines.search.inputs import DEFAULT_K, MAX_K, MAX_QUERY_CHARS

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


def esc(value) -> str:
    return html.escape("" if value is None else str(value))


def video_html(url: str) -> str:
    return (
        f'<video controls preload="metadata" width="192" src="{esc(url)}">'
        f'<a href="{esc(url)}">clip</a></video>'
    )


def like_link(key: str, k: int = DEFAULT_K) -> str:
    return f'<a class="like" href="/?like={quote(key, safe="")}&amp;k={k}">more like this</a>'


def search_form(query: str = "", k: int | str = DEFAULT_K) -> str:
    return (
        f'<form method="get" action="/"><input name="q" value="{esc(query)}" '
        f'maxlength="{MAX_QUERY_CHARS}" placeholder="a red circle moves left" autofocus> '
        f'k <input name="k" type="number" min="1" max="{MAX_K}" value="{esc(k)}"> '
        '<button type="submit">search</button></form>'
    )


def hits_html(results: list[dict], k: int) -> str:
    if not results:
        return "<p>no clips in the index</p>"
    items = []
    for r in results:
        items.append(
            f'<li class="hit" data-key="{esc(r["key"])}">{video_html(r["video_url"])}<dl>'
            f'<dt>score</dt><dd class="score">{r["score"]:.4f}</dd>'
            f'<dt>pseudo-caption</dt><dd class="caption">{esc(r["caption"])}</dd>'
            f'<dt>alt-text</dt><dd class="alt-text">{esc(r["alt_text"])}</dd>'
            f'<dt>frame caption</dt><dd class="frame-caption">{esc(r["frame_caption"])}</dd>'
            f'<dt>key</dt><dd class="key">{esc(r["key"])}</dd>'
            f'<dt>partition</dt><dd class="partition"><a href="/partitions/'
            f'{quote(r["partition"], safe="")}">{esc(r["partition"])}</a></dd>'
            f"<dt></dt><dd>{like_link(r['key'], k)}</dd></dl></li>"
        )
    return '<ol class="hits">' + "".join(items) + "</ol>"


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(PAGE.format(title=esc(title), body=body), status_code=status)


def error_html(message: str) -> str:
    return f'<p class="error" role="alert">{esc(message)}</p>'
