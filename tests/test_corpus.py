import numpy as np

from model_code.data import corpus
from model_code.data.corpus import CorpusConfig, ShapeObject, clip_spec, render_clip


def _centroid(frame: np.ndarray, colour: str) -> tuple[float, float, int]:
    mask = np.all(np.abs(frame.astype(int) - corpus.COLOURS[colour]) < 3, axis=-1)
    ys, xs = np.nonzero(mask)
    return xs.mean(), ys.mean(), int(mask.sum())


def test_corpus_generation_is_deterministic():
    config = CorpusConfig(seed=7)
    a = [clip_spec("corpus", i, config) for i in range(20)]
    b = [clip_spec("corpus", i, config) for i in range(20)]
    assert a == b
    assert np.array_equal(render_clip(a[3]), render_clip(b[3]))
    assert [corpus.alt_text(s) for s in a] == [corpus.alt_text(s) for s in b]
    other = [clip_spec("corpus", i, CorpusConfig(seed=8)) for i in range(20)]
    assert a != other


def test_ground_truth_caption_matches_rendered_motion():
    config = CorpusConfig()
    specs = corpus.split_specs("adapt", config, 0, 200)
    checked = 0
    for spec in specs:
        if spec.ordered:
            continue
        (obj,) = spec.objects
        frames = render_clip(spec)
        x0, y0, a0 = _centroid(frames[0], obj.colour)
        x1, y1, a1 = _centroid(frames[-1], obj.colour)
        caption = corpus.ground_truth_caption(spec)
        assert caption == f"a {obj.colour} {obj.shape} {obj.motion}"
        expected = {
            "moves left": x1 < x0 - 5,
            "moves right": x1 > x0 + 5,
            "moves up": y1 < y0 - 5,
            "moves down": y1 > y0 + 5,
            "grows": a1 > 1.5 * a0,
            "shrinks": a1 < a0 / 1.5,
            "stays still": abs(x1 - x0) < 1 and abs(y1 - y0) < 1 and a0 == a1,
        }[obj.motion]
        assert expected, (spec.key, obj.motion, (x0, y0, a0), (x1, y1, a1))
        checked += 1
    assert checked > 100


def test_ordered_clip_moves_first_object_then_second():
    spec = corpus.ClipSpec(
        key="t",
        split="corpus",
        seed=3,
        objects=(
            ShapeObject("red", "square", "moves right"),
            ShapeObject("blue", "circle", "grows"),
        ),
    )
    frames = render_clip(spec)
    n = spec.frames
    red = [_centroid(f, "red")[0] for f in frames]
    blue = [_centroid(f, "blue")[2] for f in frames]
    assert (
        red[n // 2 - 1] > red[0] + 5 and abs(red[-1] - red[n // 2]) < 1
    )  # (may touch the other object)
    assert blue[n // 2] == blue[0] and blue[-1] > blue[n // 2]
    assert corpus.ground_truth_caption(spec) == "a red square moves right, then a blue circle grows"


# the words a caption states motion with, written out here rather than taken from
# corpus.mentions_motion: the test must not use the code under test as its oracle
MOTION_WORDS = {"moves", "move", "moving", "left", "right", "up", "down", "grows", "grow"}
MOTION_WORDS |= {"shrinks", "shrink", "still", "then"}


def _states_motion(caption: str) -> bool:
    return bool(MOTION_WORDS & set(caption.lower().replace(",", " ").split()))


def test_alt_text_never_states_the_motion_and_single_frames_hide_it():
    config = CorpusConfig()
    specs = corpus.split_specs("corpus", config, 0, 300)
    assert not any(_states_motion(corpus.alt_text(s)) for s in specs)
    # ground truth always does, and mentions_motion (the captions' motion share) agrees
    truths = [corpus.ground_truth_caption(s) for s in specs]
    assert all(_states_motion(t) and corpus.mentions_motion(t) for t in truths)
    assert not any(corpus.mentions_motion(corpus.alt_text(s)) for s in specs)
    # alt-text is noisy: not always naming the true colour
    names_colour = [s.objects[0].colour in corpus.alt_text(s) for s in specs]
    assert 0.2 < np.mean(names_colour) < 0.9
    # clips that look alike in one frame but move differently are common
    looks = {}
    for s in specs:
        if not s.ordered:
            looks.setdefault(corpus.still_caption(s), set()).add(s.objects[0].motion)
    assert np.mean([len(m) > 1 for m in looks.values()]) > 0.8
