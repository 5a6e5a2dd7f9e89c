"""The search page in a real browser: Debian's Chromium, headless, driven through its
chromedriver by Selenium (no browser download; `.ci/setup` installs both with apt). A query
typed in the box brings back the clip it describes, whose video plays; bad requests show a
message. The screenshot lands in test-artifacts/ (or $VIDISTILL_TEST_ARTIFACTS)."""

import os
import socket
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from browser import headless_chromium

from model_code.data import corpus, shards
from model_code.inference.video_index import write_index
from model_code.models.dual_encoder import build_dual_encoder, embed_videos
from model_code.training.train_dual_encoder import DualEncoderTrainConfig, train_dual_encoder
from resources.storage import ArtifactStore

PARTITION = "embedded-0000"
SIZES = {
    "image_size": 16,
    "patch_size": 8,
    "vision_width": 32,
    "vision_layers": 1,
    "vision_heads": 2,
    "text_width": 32,
    "text_layers": 1,
    "text_heads": 2,
    "temporal_layers": 1,
    "temporal_heads": 2,
    "projection_dim": 32,
}
ARTIFACTS = Path(
    os.environ.get(
        "VIDISTILL_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"
    )
)


def _data_root(root: Path) -> tuple[Path, list]:
    """One shard of single-object clips, its clip index, and a dual encoder that has learned
    them (trained on their ground-truth captions) with its video index."""
    store = ArtifactStore(root=str(root))
    specs = [
        s for s in corpus.split_specs("corpus", corpus.CorpusConfig(), 0, 40) if not s.ordered
    ][:16]
    shards.write_shard(store.shard(PARTITION), shards.embedded_clips(specs))
    store.write_parquet(
        store.path("clip_index", f"{PARTITION}.parquet"),
        pd.DataFrame(
            {
                "key": [s.key for s in specs],
                "partition": PARTITION,
                "alt_text": [corpus.alt_text(s) for s in specs],
            }
        ),
    )
    captions = [corpus.ground_truth_caption(s) for s in specs]
    torch.manual_seed(0)
    model = build_dual_encoder(captions, num_frames=4, **SIZES)
    frames = shards.frames_by_key([store.shard(PARTITION)], 4, workers=0)
    clips = [frames[s.key] for s in specs]
    train_dual_encoder(
        model,
        list(zip(clips, captions, strict=True)),
        DualEncoderTrainConfig(
            steps=150,
            batch_size=16,
            warmup_steps=10,
            log_every=1000,
            num_frames=4,
            device="cpu",
            **{k: SIZES[k] for k in ("image_size", "patch_size")},
        ),
    )
    model.save_pretrained(store.dual_encoder("pseudo_captions", 0))
    write_index(
        store.path("video_index", "index.duckdb"),
        [s.key for s in specs],
        [PARTITION] * len(specs),
        captions,
        embed_videos(model, clips),
        "browser-test",
    )
    return root, specs


def _serve(root: Path) -> tuple[str, object]:
    import uvicorn

    from pipelines.search.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(root), host="127.0.0.1", port=port, log_level="warning")
    )
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the search server did not start"
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server


@pytest.fixture(scope="module")
def browser():
    with headless_chromium("1280,1000", "--autoplay-policy=no-user-gesture-required") as session:
        yield session


def test_a_typed_query_finds_its_clip_and_the_clip_plays(tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    root, specs = _data_root(tmp_path / "data")
    url, server = _serve(root)
    try:
        target = specs[3].objects[0]
        query = f"a {target.colour} {target.shape} {target.motion}"
        browser.get(url)
        box = browser.find_element(By.NAME, "q")
        box.clear()
        box.send_keys(query)
        box.submit()
        WebDriverWait(browser, 20).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "li.hit dd.caption")
        )
        first = browser.find_element(By.CSS_SELECTOR, "li.hit dd.caption").text
        assert target.colour in first and target.motion in first, (query, first)
        video = browser.find_element(By.CSS_SELECTOR, "li.hit video")
        duration = WebDriverWait(browser, 30).until(
            lambda d: d.execute_script(
                "const v = arguments[0]; return v.readyState >= 1 && v.duration > 0 && v.duration",
                video,
            )
        )
        assert duration > 0  # the browser fetched the clip (range requests) and decoded it
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(ARTIFACTS / "search_page.png"))

        browser.get(f"{url}/?q=+")  # an empty query: a message, not a page of nothing
        assert "empty query" in browser.find_element(By.CSS_SELECTOR, ".error").text

        (root / "video_index" / "index.duckdb").unlink()  # no index: say what to materialize
        browser.get(f"{url}/?q=a+red+circle")
        assert "video_index" in browser.find_element(By.CSS_SELECTOR, ".error").text
    finally:
        server.should_exit = True
