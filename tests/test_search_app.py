"""The search service over a tiny index: rankings, more-like-this, clips with byte ranges, and
bad requests answered with a 4xx or 503 and a message, never a 500."""

import json

import pandas as pd
import pytest
import torch
from starlette.testclient import TestClient
from tiny_runs import TINY_DUAL_ENCODER

from model_code.data import corpus, shards
from model_code.inference.video_index import write_index
from model_code.models.dual_encoder import build_dual_encoder, embed_videos
from pipelines.search.app import create_app, search_cli
from pipelines.search.inputs import MAX_K, MAX_QUERY_CHARS, byte_range
from resources.storage import ArtifactStore

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {**TINY_DUAL_ENCODER, "num_frames": 4}
PARTITIONS = {"embedded-0000": range(3), "embedded-0001": range(3, 6)}
QUERIES = ["a red circle moves left", "a blue square grows", "green triangle"]


def _write_index(store: ArtifactStore, model, specs, version: str) -> None:
    frames = shards.frames_by_key([store.shard(p) for p in PARTITIONS], 4, workers=0)
    keys = [s.key for s in specs]
    write_index(
        store.path("video_index", "index.duckdb"),
        keys,
        [p for p, idx in PARTITIONS.items() for _ in idx],
        [corpus.ground_truth_caption(s) for s in specs],
        embed_videos(model, [frames[k] for k in keys]),
        version,
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A data root as the pipeline leaves it: two shards, the catalog's clip index and frame
    captions (with image_vlm's lineage), a tiny pseudo-caption dual encoder and its index."""
    root = tmp_path_factory.mktemp("data")
    store = ArtifactStore(root=str(root))
    config = corpus.CorpusConfig(frames=8, size=32)
    specs = corpus.split_specs("corpus", config, 0, 6)
    for partition, idx in PARTITIONS.items():
        part = [specs[i] for i in idx]
        shards.write_shard(store.shard(partition), shards.embedded_clips(part))
        store.write_parquet(
            store.path("clip_index", f"{partition}.parquet"),
            pd.DataFrame(
                {
                    "key": [s.key for s in part],
                    "partition": partition,
                    "alt_text": [corpus.alt_text(s) for s in part],
                }
            ),
        )
        store.write_parquet(
            store.captions("frame_captions-image_vlm-abc123", partition),
            pd.DataFrame(
                {
                    "key": [s.key for s in part],
                    "sample": 0,
                    "caption": [f"frame of {s.key}" for s in part],
                    "source": "frame_captions",
                    "captioner_version": "image_vlm-abc123",
                    "partition": partition,
                }
            ),
        )
    store.write_bytes(store.checkpoint("image_vlm") / "lineage.json", b'{"version": "abc123"}')
    torch.manual_seed(0)
    model = build_dual_encoder([corpus.ground_truth_caption(s) for s in specs] + QUERIES, **TINY)
    model.save_pretrained(store.dual_encoder("pseudo_captions", 0))
    _write_index(store, model, specs, "tiny")
    return {"root": root, "store": store, "specs": specs, "model": model}


@pytest.fixture(scope="module")
def client(data):
    with TestClient(create_app(data["root"])) as client:
        yield client


def _member_bytes(store, partition, key) -> bytes:
    path = store.shard(partition)
    member = {m.key: m for m in shards.shard_members(path, lambda r: None)}[key]
    offset, size = member.files["mp4"]
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def test_search_results_are_ordered_by_score_and_cut_at_k(client, data):
    answer = client.get("/api/search", params={"q": QUERIES[0], "k": 4}).json()
    assert answer["query"] == QUERIES[0] and answer["k"] == 4
    scores = [r["score"] for r in answer["results"]]
    assert len(scores) == 4 and scores == sorted(scores, reverse=True)
    hit = answer["results"][0]
    spec = next(s for s in data["specs"] if s.key == hit["key"])
    assert hit["alt_text"] == corpus.alt_text(spec)
    assert hit["frame_caption"] == f"frame of {spec.key}"
    assert hit["caption"] == corpus.ground_truth_caption(spec)
    assert hit["video_url"] == f"/clips/{hit['partition']}/{hit['key']}.mp4"
    everything = client.get("/api/search", params={"q": QUERIES[0], "k": MAX_K}).json()
    assert len(everything["results"]) == 6  # k past the corpus: every clip once
    assert [r["key"] for r in everything["results"][:4]] == [r["key"] for r in answer["results"]]


def test_more_like_this_returns_the_clip_itself_first(client, data):
    key = data["specs"][4].key
    answer = client.get("/api/similar", params={"key": key, "k": 3}).json()
    assert answer["results"][0]["key"] == key
    assert len(answer["results"]) == 3 and len({r["key"] for r in answer["results"]}) == 3
    assert answer["results"][0]["score"] == pytest.approx(1.0)


def test_partitions_show_alt_text_frame_and_pseudo_captions_side_by_side(client, data):
    listing = client.get("/api/partitions").json()["partitions"]
    assert listing == [{"partition": p, "clips": 3, "indexed": 3} for p in PARTITIONS]
    clips = client.get("/api/partitions/embedded-0001").json()["clips"]
    assert [c["key"] for c in clips] == [s.key for s in data["specs"][3:6]]
    spec = data["specs"][3]
    assert (clips[0]["alt_text"], clips[0]["frame_caption"], clips[0]["caption"]) == (
        corpus.alt_text(spec),
        f"frame of {spec.key}",
        corpus.ground_truth_caption(spec),
    )
    page = client.get("/partitions/embedded-0001")
    assert page.status_code == 200 and f"frame of {spec.key}" in page.text
    assert client.get("/partitions").status_code == 200


def test_a_clip_is_served_whole_or_by_byte_range(client, data):
    key = data["specs"][1].key
    url = f"/clips/embedded-0000/{key}.mp4"
    member = _member_bytes(data["store"], "embedded-0000", key)
    size = len(member)
    whole = client.get(url)
    assert whole.status_code == 200 and whole.content == member
    assert (
        whole.headers["content-type"] == "video/mp4" and whole.headers["accept-ranges"] == "bytes"
    )
    for header, first, last in [
        ("bytes=10-19", 10, 19),
        ("bytes=100-", 100, size - 1),
        ("bytes=-7", size - 7, size - 1),
        (f"bytes=5-{size + 100}", 5, size - 1),
    ]:
        part = client.get(url, headers={"Range": header})
        assert part.status_code == 206, header
        assert part.content == member[first : last + 1], header
        assert part.headers["content-range"] == f"bytes {first}-{last}/{size}"
        assert int(part.headers["content-length"]) == last - first + 1
    for header in (f"bytes={size}-", f"bytes={size + 5}-{size + 9}", "bytes=-0"):
        refused = client.get(url, headers={"Range": header})
        assert refused.status_code == 416, header
        assert refused.headers["content-range"] == f"bytes */{size}"
        assert "error" in refused.json()
    ignored = client.get(url, headers={"Range": "bytes=0-1,5-9"})  # several ranges: the whole clip
    assert ignored.status_code == 200 and ignored.content == member


def test_byte_range_ignores_what_it_does_not_understand():
    assert byte_range(None, 10) is None
    assert byte_range("items=0-1", 10) is None
    assert byte_range("bytes=5-2", 10) is None
    assert byte_range("bytes=x-", 10) is None
    assert byte_range("bytes=-", 10) is None
    assert byte_range("bytes=0-0", 10) == (0, 0)


@pytest.mark.parametrize(
    "url",
    [
        "/api/search",
        "/api/search?q=",
        "/api/search?q=%20%20",
        "/api/search?q=" + "a" * (MAX_QUERY_CHARS + 1),
        "/api/search?q=red&k=0",
        "/api/search?q=red&k=101",
        "/api/search?q=red&k=-1",
        "/api/search?q=red&k=ten",
        "/api/search?q=red&k=1e3",
        "/api/search?q=%FF%FEred",
        "/api/similar",
        "/api/similar?key=no-such-clip",
        "/api/similar?key=corpus-000000&k=0",
        "/api/partitions/embedded-9999",
        "/api/partitions/..",
        "/clips/embedded-0000/no-such-clip.mp4",
        "/clips/embedded-9999/corpus-000000.mp4",
        "/clips/%2e%2e/corpus-000000.mp4",
        "/clips/..%2Fclips%2Fembedded-0000/corpus-000000.mp4",
        "/clips/embedded-0000/..%2F..%2Fetc%2Fpasswd.mp4",
        "/clips/embedded-0000/.hidden.mp4",
        "/clips/embedded-0000/corpus-000000.json",
        "/api/nothing-here",
    ],
)
def test_bad_requests_get_a_4xx_and_a_message(client, url):
    response = client.get(url)
    assert 400 <= response.status_code < 500, (url, response.status_code, response.text)
    assert response.json()["error"]


def test_the_page_searches_without_javascript_and_shows_errors_inline(client, data):
    page = client.get("/", params={"q": QUERIES[1], "k": 2})
    assert page.status_code == 200 and page.text.count('class="hit"') == 2
    assert "<video controls" in page.text and "more like this" in page.text
    key = data["specs"][0].key
    like = client.get("/", params={"like": key})
    assert like.status_code == 200 and f'data-key="{key}"' in like.text
    empty = client.get("/", params={"q": ""})
    assert (
        empty.status_code == 400 and 'class="error"' in empty.text and "empty query" in empty.text
    )
    bad_k = client.get("/", params={"q": "red", "k": "0"})
    assert bad_k.status_code == 400 and "k must be" in bad_k.text
    escaped = client.get("/", params={"q": "<script>alert(1)</script>"})
    assert escaped.status_code == 200 and "<script>alert" not in escaped.text


def test_without_an_index_search_answers_503_saying_what_to_materialize(tmp_path):
    with TestClient(create_app(tmp_path)) as client:
        answer = client.get("/api/search", params={"q": "a red circle"})
        assert answer.status_code == 503 and "materialize video_index" in answer.json()["error"]
        page = client.get("/", params={"q": "a red circle"})
        assert page.status_code == 503 and "materialize video_index" in page.text
        assert client.get("/api/partitions").status_code == 503
        assert client.get("/api/status").json()["ready"] is False


def test_the_cli_gives_the_apis_top_k(client, data, capsys):
    for query in QUERIES:
        api = client.get("/api/search", params={"q": query, "k": 4}).json()
        assert search_cli(query, k=4, json_out=True, data_root=str(data["root"])) == 0
        cli = json.loads(capsys.readouterr().out)
        assert [r["key"] for r in cli["results"]] == [r["key"] for r in api["results"]]
    assert search_cli(QUERIES[0].split(), k=2, data_root=str(data["root"])) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 3 and table[0].startswith("rank")
    assert search_cli("  ", data_root=str(data["root"])) == 2
    assert "empty query" in capsys.readouterr().err


def test_a_rebuilt_index_is_served_without_a_restart(client, data):
    assert client.get("/api/status").json()["model_version"] == "tiny"
    _write_index(data["store"], data["model"], data["specs"], "tiny-2")
    assert client.get("/api/status").json()["model_version"] == "tiny-2"
