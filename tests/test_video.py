import numpy as np
import pytest

from model_code.data import corpus, video


def test_decoded_clip_matches_rendered_frames_at_requested_times(tmp_path):
    spec = corpus.clip_spec("benchmark", 4, corpus.CorpusConfig())
    frames = corpus.render_clip(spec)
    mp4 = video.encode_frames(frames, spec.fps)
    path = tmp_path / "clip.mp4"
    path.write_bytes(mp4)

    info = video.probe(path)
    assert (info.width, info.height, info.fps, info.codec) == (64, 64, 8.0, "h264")
    assert info.duration == pytest.approx(spec.frames / spec.fps, abs=0.05)

    sampled = video.sample_frames(mp4, 8)
    idx = video.sample_indices(spec.frames, 8)
    assert sampled.shape == (8, 64, 64, 3)
    err = np.abs(sampled.astype(int) - frames[idx].astype(int)).mean(axis=(1, 2, 3))
    assert err.max() < 6, err  # codec tolerance
    # each sampled frame is closest to the rendered frame it was asked for
    for i, f in zip(idx, sampled):
        dists = np.abs(frames.astype(int) - f.astype(int)).mean(axis=(1, 2, 3))
        assert dists.argmin() == i or dists[i] - dists.min() < 0.5

    at = video.sample_frames(path, times=[0.0, 1.0, 1.875], fps=spec.fps)
    for t, f in zip([0, 8, 15], at):
        assert np.abs(f.astype(int) - frames[t].astype(int)).mean() < 6


def test_decode_windows_cuts_scales_and_pads(tmp_path):
    frames = np.zeros((40, 16, 32, 3), np.uint8)
    frames[..., 0] = 200
    src = tmp_path / "wide.mp4"
    src.write_bytes(video.encode_frames(frames, 20))
    ((index, out),) = list(video.decode_windows(src, [(0.5, 1.5)], size=64, fps=8))
    assert index == 0 and out.shape == (8, 64, 64, 3)
    assert out[:, 32, 32, 0].mean() > 150  # content in the middle
    assert out[:, 2, 32].mean() < 30  # letterbox padding top


def _reference_decode(mp4: bytes, size: tuple[int, int]) -> np.ndarray:
    """Yesterday's decoder: every frame through an ffmpeg process, rgb24 on a pipe."""
    import ffmpeg as ff

    out, _ = (
        ff.input("pipe:")
        .output("pipe:", format="rawvideo", pix_fmt="rgb24")
        .global_args("-loglevel", "error", "-nostdin")
        .run(cmd=video.ffmpeg_binary(), input=mp4, capture_stdout=True)
    )
    w, h = size
    return np.frombuffer(out, np.uint8).reshape(-1, h, w, 3)


def test_in_process_decode_equals_the_ffmpeg_process_on_embedded_clips():
    from model_code.data import shards

    specs = corpus.split_specs("corpus", corpus.CorpusConfig(), 0, 12)
    for clip in shards.embedded_clips(specs):
        reference = _reference_decode(clip.mp4, (64, 64))
        idx = video.sample_indices(len(reference), 8)
        assert np.array_equal(video.sample_frames(clip.mp4, 8), reference[idx]), clip.key
        assert np.array_equal(video.decode_frames(clip.mp4), reference)


def test_probe_reports_unusable_inputs(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(video.VideoError, match="empty"):
        video.probe(empty)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(video.VideoError):
        video.probe(junk)
    with pytest.raises(video.VideoError, match="missing"):
        video.probe(tmp_path / "nope.mp4")
