"""Real manifests and folders as users write them: bad rows are rejects with their reason,
segments of one video are rows of their own, the source is set once for every entry point, and
`split: shots` never lets a clip span a cut."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model_code.data import video
from model_code.data.ingest import IngestConfig, ingest, ingest_source
from model_code.data.manifest import VideoSource, read_manifest


def _ffmpeg(*args: str) -> None:
    subprocess.run(
        [video.ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True
    )


@pytest.fixture(scope="module")
def clip6(tmp_path_factory) -> Path:
    """A 6 s test video."""
    path = tmp_path_factory.mktemp("videos") / "six.mp4"
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=96x72:rate=10:duration=6",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        str(path),
    )
    return path


def _build(manifest: Path, data: Path, **source) -> tuple[dict, pd.DataFrame]:
    """clip_shards of the manifest's one partition, as the asset builds it."""
    from assets.corpus import build_shard
    from resources.sources import ClipSource
    from resources.storage import ArtifactStore

    clip_source = ClipSource(source=str(manifest), clip_seconds=1.0, **source)
    (partition,) = clip_source.plan()
    report = build_shard(partition, clip_source, ArtifactStore(root=str(data)))
    rejects = pd.read_parquet(data / "rejects" / f"{partition}.parquet")
    return report, rejects


def test_a_bad_row_is_one_reject_with_its_reason_and_the_rest_become_clips(clip6, tmp_path):
    rows = [
        {"path": str(clip6), "start": "abc", "end": "2"},  # not a number
        {"path": str(clip6), "start": "-1", "end": "2"},  # negative
        {"path": str(clip6), "start": "3", "end": "2"},  # end before start
        {"path": str(clip6), "start": "50", "end": ""},  # past the end of the video
        {"path": "", "start": "0", "end": "1"},  # no path
        {"path": str(clip6), "start": "0", "end": "2"},  # good
        {"path": str(clip6), "start": "0", "end": "2"},  # the same row again
    ]
    manifest = tmp_path / "m.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    report, rejects = _build(manifest, tmp_path / "data")
    assert report["inputs"] == 7 and report["inputs_used"] == 1
    assert report["inputs_rejected"] == 6 and report["clips"] == 2
    reasons = dict(zip(rejects["row"].astype(int), rejects["reason"], strict=True))
    assert "start 'abc' is not a number of seconds" in reasons[0]
    assert "start '-1' must be a finite number of seconds >= 0" in reasons[1]
    assert "end 2s is not after start 3s" in reasons[2]
    assert "start 50s is at or past the end of the video (6.00s)" in reasons[3]
    assert "no path" in reasons[4]
    assert "the same video and times as row 5" in reasons[6]


def test_segments_of_one_video_are_rows_of_their_own(clip6, tmp_path):
    segments = [(0.0, 1.5), (2.0, 3.0), (4.0, 6.0)]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        "\n".join(
            json.dumps({"path": clip6.name, "start": s, "end": e, "alt_text": f"segment {i}"})
            for i, (s, e) in enumerate(segments)
        )
    )
    (tmp_path / clip6.name).symlink_to(clip6)
    report, rejects = _build(manifest, tmp_path / "data")
    assert report["inputs"] == 3 and report["inputs_used"] == 3 and rejects.empty
    index = pd.read_parquet(next((tmp_path / "data" / "clip_index").glob("*.parquet")))
    for i, (s, e) in enumerate(segments):
        mine = index[index["alt_text"] == f"segment {i}"]
        assert len(mine) >= 1
        assert (mine["start"] >= s).all() and (mine["end"] <= e).all()


def test_paths_outside_the_manifest_folder_are_a_setting(clip6, tmp_path):
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": [str(clip6)]}).to_csv(manifest, index=False)
    (source,) = read_manifest(manifest, outside_allowed=False)
    assert "outside the manifest's folder" in source.error
    report, rejects = _build(manifest, tmp_path / "data", paths_outside_manifest=False)
    assert report["inputs_rejected"] == 1 and "outside" in rejects["reason"][0]
    (allowed,) = read_manifest(manifest)
    assert allowed.error == ""


def test_a_dangling_link_in_a_folder_is_a_reject(clip6, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "good.mp4").symlink_to(clip6)
    (folder / "gone.mp4").symlink_to(tmp_path / "deleted.mp4")
    sources = read_manifest(folder)
    assert [Path(s.path).name for s in sources] == ["gone.mp4", "good.mp4"]
    clips, rejects = ingest(sources, IngestConfig(clip_seconds=2.0))
    assert len(clips) == 3 and len(rejects) == 1
    assert "dangling symlink" in rejects[0]["reason"] and rejects[0]["row"] == 0


def test_one_environment_setting_is_the_source_of_the_plan_the_sensor_and_a_default_run(
    clip6, tmp_path
):
    """A fresh code location with $VIDISTILL_SOURCE set: the plan asset run with no config, the
    sensor, and the Definitions' resource all see the manifest."""
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": [str(clip6)]}).to_csv(manifest, index=False)
    script = """
import json
from dagster import DagsterInstance, build_sensor_context, materialize
from pipelines.definitions import defs
from pipelines.sensors import new_clip_shards
instance = DagsterInstance.ephemeral()
source = defs.resources["clip_source"]
run = materialize([defs.get_assets_def("clip_shard_plan")], resources=defs.resources,
                  instance=instance)
plan_meta = run.asset_materializations_for_node("clip_shard_plan")[0].metadata
result = new_clip_shards(build_sensor_context(instance=DagsterInstance.ephemeral(),
                                              resources=defs.resources))
print(json.dumps({"resource": source.source, "plan": plan_meta["source"].value,
                  "partitions": instance.get_dynamic_partitions("clip_shards"),
                  "sensor": list(result.dynamic_partitions_requests[0].partition_keys)}))
"""
    env = {
        **os.environ,
        "VIDISTILL_SOURCE": str(manifest),
        "VIDISTILL_SPLIT": "shots",
        "VIDISTILL_DATA_ROOT": str(tmp_path / "data"),
        "HF_HUB_OFFLINE": "1",
    }
    done = subprocess.run(
        [os.sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["resource"] == seen["plan"] == str(manifest)
    assert seen["partitions"] == seen["sensor"] == ["m-0000"]


# --- shots ------------------------------------------------------------------------------------

COLOURS = {"red": (255, 0, 0), "lime": (0, 255, 0), "blue": (0, 0, 255)}  # 3 brightnesses


@pytest.fixture(scope="module")
def three_scenes(tmp_path_factory) -> Path:
    """3 scenes of 2.5 s (red, lime, blue with moving noise), cut at 2.5 s and 5 s."""
    folder = tmp_path_factory.mktemp("scenes")
    parts = []
    for name in COLOURS:
        part = folder / f"{name}.mp4"
        _ffmpeg(
            "-f",
            "lavfi",
            "-i",
            f"color=c={name}:size=96x72:rate=25:duration=2.5",
            "-vf",
            "noise=alls=8:allf=t",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            str(part),
        )
        parts.append(part)
    (folder / "list.txt").write_text("".join(f"file '{p}'\n" for p in parts))
    out = folder / "scenes.mp4"
    _ffmpeg(
        "-f",
        "concat",
        "-safe",
        "0",
        "-i",
        str(folder / "list.txt"),
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        str(out),
    )
    return out


def _scene_of(frame: np.ndarray) -> str:
    mean = frame.reshape(-1, 3).mean(0)
    return max(COLOURS, key=lambda c: -np.abs(mean - np.array(COLOURS[c])).sum())


def test_shot_changes_are_found_at_the_cuts(three_scenes):
    cuts = video.shot_changes(three_scenes)
    assert len(cuts) == 2 and abs(cuts[0] - 2.5) < 0.05 and abs(cuts[1] - 5.0) < 0.05


def test_clips_split_at_shots_never_cross_a_cut(three_scenes):
    source = VideoSource(str(three_scenes))
    fixed, _ = ingest_source(source, IngestConfig(clip_seconds=2.0, size=32))
    shots, rejects = ingest_source(
        source, IngestConfig(clip_seconds=2.0, size=32, split="shots", min_clip_seconds=0.4)
    )
    assert not rejects

    def scenes(clip) -> set[str]:
        # the letterbox pads the 96x72 frame: score the picture's middle only
        return {_scene_of(f[12:20, 8:24]) for f in video.decode_frames(clip.mp4)}

    assert any(len(scenes(c)) > 1 for c in fixed)  # fixed 2 s windows do cross the cuts
    assert all(len(scenes(c)) == 1 for c in shots)
    assert [c.meta["shot"] for c in shots] == [0, 0, 1, 1, 2, 2]
    for c in shots:
        assert c.meta["shot_start"] <= c.meta["start"] < c.meta["end"] <= c.meta["shot_end"]


# --- the MSR-VTT 1k-A protocol ----------------------------------------------------------------


@pytest.fixture(scope="module")
def msrvtt(tmp_path_factory) -> Path:
    """3 real test videos, a JSON with 2 captions each, and a JSFUSION-style CSV whose
    sentences are none of the JSON's first captions."""
    folder = tmp_path_factory.mktemp("msrvtt")
    (folder / "videos").mkdir()
    for i in range(3):
        _ffmpeg(
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size=96x72:rate=10:duration={2 + i}",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            str(folder / "videos" / f"video{i}.mp4"),
        )
    data = {
        "videos": [{"video_id": f"video{i}"} for i in range(3)],
        "sentences": [
            {"video_id": f"video{i}", "caption": f"json caption {j} of {i}"}
            for i in range(3)
            for j in range(2)
        ],
    }
    (folder / "test_videodatainfo.json").write_text(json.dumps(data))
    pd.DataFrame(
        {
            "key": ["ret0", "ret1", "ret2"],
            "vid_key": ["msr0", "msr1", "msr2"],
            "video_id": [f"video{i}" for i in (2, 0, 1)],
            "sentence": [f"the csv sentence for {i}" for i in (2, 0, 1)],
        }
    ).to_csv(folder / "MSRVTT_JSFUSION_test.csv", index=False)
    return folder


@pytest.mark.parametrize(
    ("protocol", "expected"),
    [
        (
            "auto",
            [
                ("video2", "the csv sentence for 2"),
                ("video0", "the csv sentence for 0"),
                ("video1", "the csv sentence for 1"),
            ],
        ),
        (
            "all_captions",
            [(f"video{i}", f"json caption {j} of {i}") for i in (2, 0, 1) for j in range(2)],
        ),
    ],
)
def test_the_benchmark_scores_exactly_the_protocols_pairs(msrvtt, tmp_path, protocol, expected):
    from dagster import materialize

    from pipelines.definitions import defs, make_resources

    config = {
        "annotations": str(msrvtt / "test_videodatainfo.json"),
        "videos_dir": str(msrvtt / "videos"),
        "test_list": str(msrvtt / "MSRVTT_JSFUSION_test.csv"),
        "protocol": protocol,
    }
    result = materialize(
        list(defs.assets),
        selection=["retrieval_benchmark"],
        resources=make_resources(str(tmp_path / "data")),
        run_config={"ops": {"retrieval_benchmark": {"config": config}}},
    )
    meta = result.asset_materializations_for_node("retrieval_benchmark")[0].metadata
    assert meta["protocol"].value == ("1k-A" if protocol == "auto" else protocol)
    stored = json.loads((tmp_path / "data" / "benchmark" / "annotations.json").read_text())
    assert stored["protocol"] == meta["protocol"].value
    assert [(s["video_id"], s["caption"]) for s in stored["sentences"]] == expected
    assert meta["videos"].value == 3


def test_1k_a_without_the_csv_sentences_is_refused_by_name(msrvtt):
    from model_code.data import annotations

    ids = msrvtt / "ids.txt"
    ids.write_text("video0\nvideo1\n")
    with pytest.raises(ValueError, match="protocol 1k-A needs test_list"):
        annotations.read_msrvtt(
            msrvtt / "test_videodatainfo.json", msrvtt / "videos", ids, protocol="1k-A"
        )
    assert annotations.resolve_protocol("auto", ids) == "all_captions"


# --- VATEX and labelled videos for zero-shot classification ---------------------------------


@pytest.fixture(scope="module")
def formats(tmp_path_factory) -> Path:
    """Real videos laid out as VATEX (videos named by videoID + a JSON list with enCap), as a
    UCF101-style class folder, and as a path,label CSV."""
    root = tmp_path_factory.mktemp("formats")
    (root / "vatex").mkdir()
    sources = ["testsrc2", "smptebars", "rgbtestsrc"]
    for i, src in enumerate(sources):
        _ffmpeg(
            "-f",
            "lavfi",
            "-i",
            f"{src}=size=96x72:rate=10:duration=2",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            str(root / "vatex" / f"vid{i}_000001_000003.mp4"),
        )
    (root / "vatex.json").write_text(
        json.dumps(
            [
                {
                    "videoID": f"vid{i}_000001_000003",
                    "enCap": [f"english {j} about {i}" for j in range(2)],
                    "chCap": ["中文"],
                }
                for i in range(3)
            ]
        )
    )
    for cls, src in (("ApplyEyeMakeup", "testsrc2"), ("ride_bike", "smptebars")):
        (root / "ucf" / cls).mkdir(parents=True)
        for k in range(2):
            _ffmpeg(
                "-f",
                "lavfi",
                "-i",
                f"{src}=size=96x72:rate=10:duration=2",
                "-c:v",
                "libx264",
                "-pix_fmt",
                "yuv420p",
                str(root / "ucf" / cls / f"v{k}.mp4"),
            )
    pd.DataFrame(
        {
            "path": ["ucf/ApplyEyeMakeup/v0.mp4", "ucf/ride_bike/v1.mp4"],
            "label": ["ApplyEyeMakeup", "ride_bike"],
        }
    ).to_csv(root / "labels.csv", index=False)
    return root


def _benchmark(tmp_path, config) -> tuple[dict, Path]:
    from dagster import materialize

    from pipelines.definitions import defs, make_resources

    result = materialize(
        list(defs.assets),
        selection=["retrieval_benchmark"],
        resources=make_resources(str(tmp_path / "data")),
        run_config={"ops": {"retrieval_benchmark": {"config": config}}},
    )
    meta = result.asset_materializations_for_node("retrieval_benchmark")[0].metadata
    return meta, tmp_path / "data" / "benchmark"


@pytest.mark.parametrize("classes", ["ucf", "labels.csv"])
def test_vatex_retrieval_and_labelled_zero_shot_classes(formats, tmp_path, classes):
    from model_code.evaluation.heldout import score_dual_encoder
    from model_code.models.dual_encoder import build_dual_encoder

    meta, folder = _benchmark(
        tmp_path,
        {
            "annotations": str(formats / "vatex.json"),
            "videos_dir": str(formats / "vatex"),
            "classes": str(formats / classes),
        },
    )
    assert meta["protocol"].value == "vatex" and meta["rejects"].value == 0
    stored = json.loads((folder / "annotations.json").read_text())
    assert [(s["video_id"], s["caption"]) for s in stored["sentences"]] == [
        (f"vid{i}_000001_000003", f"english {j} about {i}") for i in range(3) for j in range(2)
    ]
    task = json.loads((folder / "classes.json").read_text())["classes"]
    assert task["classes"] == ["apply eye makeup", "ride bike"]
    assert sorted(task["labels"].values()) == ([0, 0, 1, 1] if classes == "ucf" else [0, 1])
    assert task["prompts"][1][0] == "a video of ride bike"

    model = build_dual_encoder(
        [s["caption"] for s in stored["sentences"]]
        + [p for group in task["prompts"] for p in group]
    )
    model.save_pretrained(tmp_path / "de")
    scores = score_dual_encoder(tmp_path / "de", folder)
    assert 0 <= scores["zs_classes_top1"] <= 100
    assert scores["t2v_MeanR"] <= 3  # ranked among the 3 described videos, not the class clips
