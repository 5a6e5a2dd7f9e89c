import io
import json
import os
import signal
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from model_code.data import corpus, shards
from model_code.data.ingest import CLIP_INDEX_COLUMNS, account_for_inputs, clip_index


def _clips(n: int) -> list[shards.Clip]:
    return shards.embedded_clips(corpus.split_specs("corpus", corpus.CorpusConfig(), 0, n))


def test_rewriting_a_shard_is_byte_identical(tmp_path):
    clips = _clips(4)
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    shards.write_shard(a, clips)
    shards.write_shard(b, _clips(4))
    assert a.read_bytes() == b.read_bytes()
    keys = [k for k, _, _ in shards.iter_shard(a, 4)]
    assert keys == [c.key for c in clips]


def test_bad_members_become_rejects_not_failures(tmp_path):
    good = _clips(3)
    path = tmp_path / "mixed.tar"
    with tarfile.open(path, "w") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add(f"{good[0].key}.mp4", good[0].mp4)
        add(f"{good[0].key}.json", json.dumps(good[0].meta).encode())
        add("corrupt.mp4", b"\x00\x00\x00 ftypisom" + os.urandom(3000))
        add("corrupt.json", json.dumps({**good[1].meta, "key": "corrupt"}).encode())
        add("../evil.mp4", good[2].mp4)
        add("../evil.json", json.dumps(good[2].meta).encode())
        add("nojson.mp4", good[2].mp4)
    rejects = []
    out = list(shards.iter_shard(path, 8, on_reject=rejects.append))
    assert [k for k, _, _ in out] == [good[0].key]
    reasons = {r["key"]: r["reason"] for r in rejects}
    assert "corrupt" in reasons and "nojson" in reasons
    assert any("unsafe" in r for r in reasons.values())
    with pytest.raises(ValueError, match="unsafe"):
        shards.write_shard(tmp_path / "x.tar", [shards.Clip("/etc/passwd", b"", {})])


def test_a_write_killed_midway_leaves_no_partial_shard(tmp_path):
    target = tmp_path / "clips" / "p.tar"
    script = f"""
import itertools, time
from model_code.data import corpus, shards
clips = shards.embedded_clips(corpus.split_specs("corpus", corpus.CorpusConfig(), 0, 2))
def slow():
    for c in itertools.cycle(clips):
        yield shards.Clip(c.key + str(time.time_ns()), c.mp4, c.meta)
        time.sleep(0.01)
shards.write_shard({str(target)!r}, slow())
"""
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=os.getcwd())
    import time

    deadline = time.time() + 60
    while time.time() < deadline and not list(target.parent.glob(".p.tar.*")):
        time.sleep(0.1)
    time.sleep(0.5)
    half = [p for p in target.parent.glob(".p.tar.*") if p.stat().st_size > 0]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert half, "the writer never got as far as a non-empty temp file: nothing was killed mid-way"
    assert not target.exists()
    assert [p.name for p in target.parent.iterdir() if not p.name.startswith(".")] == []


def test_a_shard_split_across_three_decode_workers_yields_every_clip_once_in_tar_order(tmp_path):
    clips = _clips(11)
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    shards.write_shard(a, clips[:7])
    shards.write_shard(b, clips[7:])
    with shards.ClipStream([a, b], 4, workers=3, chunk=2) as stream:
        rows = list(stream)
    assert [(shard, key) for shard, key, _, _ in rows] == [
        (0 if i < 7 else 1, c.key) for i, c in enumerate(clips)
    ]
    inline = list(shards.iter_shard([a, b], 4))
    assert all(np.array_equal(r[2], i[1]) for r, i in zip(rows, inline, strict=True))
    batches = list(shards.ClipStream([a, b], 4, workers=3, chunk=2).batches(3))
    assert [(s, len(k)) for s, k, _ in batches] == [(0, 3), (0, 3), (0, 1), (1, 3), (1, 1)]
    with pytest.raises(ValueError, match="decode workers must be 0"):
        shards.ClipStream([a], 4, workers=-1)
    with pytest.raises(ValueError, match="batch_size must be at least 1, not 0"):
        next(shards.ClipStream([a], 4, workers=0).batches(0))


def test_links_in_a_shard_are_rejects_with_their_reason(tmp_path):
    good = _clips(2)
    path = tmp_path / "links.tar"
    with tarfile.open(path, "w") as tar:
        for clip in good[:1]:
            for ext, data in (("mp4", clip.mp4), ("json", json.dumps(clip.meta).encode())):
                info = tarfile.TarInfo(f"{clip.key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("sneaky.mp4")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    rejects = []
    assert [k for k, _, _ in shards.iter_shard(path, 2, on_reject=rejects.append)] == [good[0].key]
    assert rejects == [
        {"key": "sneaky", "reason": "sneaky.mp4 is not a regular file (link or device)"}
    ]


def test_decode_workers_of_a_caption_step_never_load_torch(tmp_path):
    shards.write_shard(tmp_path / "a.tar", _clips(2))
    script = f"""
from model_code.data import shards
stream = shards.ClipStream([{str(tmp_path / "a.tar")!r}], 2, workers=1)
import torch  # a caption step loads its model once its stream exists
loaded = stream._pool.submit(eval, "set(__import__('sys').modules)").result(timeout=60)
print(sorted(loaded & {{"torch", "transformers", "model_code.data.shards"}}))
print(len(list(stream)))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=os.getcwd()
    ).stdout.split("\n")
    assert out[:2] == ["['model_code.data.shards']", "2"]


def test_every_input_is_used_or_rejected_and_a_lost_one_stops_the_shard():
    clips = _clips(2)
    assert account_for_inputs("p0", 3, clips, [{"key": "gone", "reason": "x"}]) == (2, 1)
    with pytest.raises(RuntimeError, match="p0: 3 inputs but 2 used \\+ 0 rejected"):
        account_for_inputs("p0", 3, clips, [])
    index = clip_index(clips, "p0")
    assert list(index.columns) == CLIP_INDEX_COLUMNS
    assert index["key"].tolist() == [c.key for c in clips] and set(index["partition"]) == {"p0"}
