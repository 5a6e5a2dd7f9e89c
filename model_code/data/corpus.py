"""The embedded motion corpus: short clips of coloured shapes that move, grow, shrink or stay.

A single frame shows colour, shape and position, never the motion: every trajectory passes
through a random position at its base size half-way through the clip. So a still-image
captioner and web alt-text cannot say what happens, and a video captioner can — the
paper's effect in miniature. Everything is a pure function of (split, index, seed).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 45, 45),
    "green": (40, 185, 70),
    "blue": (45, 90, 230),
    "yellow": (235, 215, 40),
    "purple": (160, 60, 200),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
MOTIONS: tuple[str, ...] = (
    "moves left",
    "moves right",
    "moves up",
    "moves down",
    "grows",
    "shrinks",
    "stays still",
)
MOVING = MOTIONS[:-1]
SPLITS: tuple[str, ...] = ("image", "adapt", "corpus", "benchmark")
"""image: single frames for the still-image VLM; adapt: supervised video captions (stage 1);
corpus: the large unlabeled set (only alt-text is visible downstream); benchmark: held out."""

_ALT_TEMPLATES = (
    "{colour} {shape}",
    "{shape} on a textured background",
    "abstract {colour} shape",
    "stock footage {shape} animation hd",
    "{colour} {shape} clip art",
    "geometric {shape} loop",
    "simple {shape} icon",
    "{colour} background video",
)
_ALT_GENERIC = (
    "free video background",
    "animated shapes for kids",
    "motion graphics template 4k",
    "screensaver",
    "untitled clip",
    "abstract art wallpaper",
)
_ALT_TAGS = ("#animation", "#hd", "#loop", "#shapes", "#art", "#design", "#4k", "#video")


@dataclass(frozen=True)
class ShapeObject:
    colour: str
    shape: str
    motion: str


@dataclass(frozen=True)
class ClipSpec:
    """What a clip shows; the ground truth that captions and attributes are made from."""

    key: str
    split: str
    objects: tuple[ShapeObject, ...]
    seed: int
    frames: int = 16
    size: int = 64
    fps: int = 8

    @property
    def ordered(self) -> bool:
        return len(self.objects) > 1

    def attributes(self) -> dict:
        return {"objects": [asdict(o) for o in self.objects], "ordered": self.ordered}


@dataclass
class CorpusConfig:
    """Sizes of the embedded corpus. The defaults keep the whole demo practical on 2 CPU cores."""

    seed: int = 0
    frames: int = 16
    size: int = 64
    fps: int = 8
    two_object_rate: float = 0.3
    split_sizes: dict[str, int] = field(
        default_factory=lambda: {"image": 1500, "adapt": 900, "corpus": 1200, "benchmark": 200}
    )

    def __post_init__(self):
        checks = {
            "seed": (self.seed >= 0, ">= 0"),
            "frames": (self.frames >= 2, ">= 2"),
            "size": (self.size >= 16 and self.size % 2 == 0, "even and >= 16"),
            "fps": (self.fps >= 1, ">= 1"),
            "two_object_rate": (0.0 <= self.two_object_rate <= 1.0, "within [0, 1]"),
        }
        for name, (ok, allowed) in checks.items():
            if not ok:
                raise ValueError(
                    f"CorpusConfig.{name} must be {allowed}, not {getattr(self, name)!r}"
                )
        for split, n in self.split_sizes.items():
            if not (isinstance(n, int) and n >= 0):
                raise ValueError(
                    f"CorpusConfig.split_sizes[{split!r}] must be a whole number >= 0, not {n!r}"
                )


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def clip_spec(split: str, index: int, config: CorpusConfig) -> ClipSpec:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    rng = _rng("spec", config.seed, split, index)
    two = rng.random() < config.two_object_rate
    colours = rng.choice(list(COLOURS), size=2, replace=False)
    shapes = rng.choice(SHAPES, size=2)
    if two:
        motions = rng.choice(MOVING, size=2)
        objects = tuple(
            ShapeObject(str(colours[i]), str(shapes[i]), str(motions[i])) for i in (0, 1)
        )
    else:
        objects = (ShapeObject(str(colours[0]), str(shapes[0]), str(rng.choice(MOTIONS))),)
    return ClipSpec(
        key=f"{split}-{index:06d}",
        split=split,
        objects=objects,
        seed=int(rng.integers(2**31)),
        frames=config.frames,
        size=config.size,
        fps=config.fps,
    )


def split_specs(
    split: str, config: CorpusConfig, start: int = 0, stop: int | None = None
) -> list[ClipSpec]:
    stop = config.split_sizes[split] if stop is None else stop
    return [clip_spec(split, i, config) for i in range(start, stop)]


def _phrase(o: ShapeObject) -> str:
    return f"a {o.colour} {o.shape}"


def ground_truth_caption(spec: ClipSpec) -> str:
    """What happens, in time order: 'a red circle moves left, then a blue square grows'."""
    return ", then ".join(f"{_phrase(o)} {o.motion}" for o in spec.objects)


def still_caption(spec: ClipSpec) -> str:
    """What one frame shows: 'a red circle' or 'a red circle and a blue square'."""
    return " and ".join(_phrase(o) for o in spec.objects)


def alt_text(spec: ClipSpec) -> str:
    """Web-style alt-text: never states the motion; partial, generic, sometimes wrong or
    unrelated."""
    rng = _rng("alt", spec.seed)
    o = spec.objects[int(rng.integers(len(spec.objects)))]
    colour = o.colour
    if rng.random() < 0.15:  # wrong colour, as real alt-text often is
        colour = str(rng.choice([c for c in COLOURS if c != o.colour]))
    roll = rng.random()
    if roll < 0.2:
        text = str(rng.choice(_ALT_GENERIC))
    else:
        text = str(rng.choice(_ALT_TEMPLATES)).format(colour=colour, shape=o.shape)
    if rng.random() < 0.4:
        tags = rng.choice(_ALT_TAGS, size=int(rng.integers(1, 4)), replace=False)
        text = f"{text} {' '.join(tags)}"
    return text


_MOTION_WORDS = re.compile(r"\b(left|right|up|down|grows?|shrinks?|still|then)\b")


def mentions_motion(caption: str) -> bool:
    return bool(_MOTION_WORDS.search(caption.lower()))


# --- rendering -------------------------------------------------------------------------------


def _background(spec: ClipSpec) -> np.ndarray:
    rng = _rng("bg", spec.seed)
    s = spec.size
    base = rng.integers(40, 110, size=3).astype(np.float32)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    gradient = (xx * rng.uniform(-30, 30) + yy * rng.uniform(-30, 30))[..., None]
    period = rng.integers(4, 10)
    stripes = (np.arange(s)[:, None] + np.arange(s)[None, :] * rng.integers(0, 2)) // period % 2
    texture = stripes[..., None].astype(np.float32) * rng.uniform(6, 16)
    noise = rng.normal(0, 4, size=(s, s, 1)).astype(np.float32)
    return np.clip(base + gradient + texture + noise, 0, 255)


def _mask(shape: str, cx: float, cy: float, r: float, s: int) -> np.ndarray:
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5
    if shape == "circle":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    if shape == "square":
        return (np.abs(xx - cx) <= r * 0.85) & (np.abs(yy - cy) <= r * 0.85)
    if shape == "triangle":
        top, bottom = cy - r, cy + r * 0.8
        half = (yy - top) / (bottom - top) * r
        return (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= half)
    raise ValueError(f"unknown shape {shape!r}")


def _trajectory(motion: str, t: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Offsets (dx, dy) and scale for progress t in [-1, 1]; zero offset and unit scale at t=0."""
    travel = 0.18 * size
    dx, dy, scale = np.zeros_like(t), np.zeros_like(t), np.ones_like(t)
    if motion == "moves left":
        dx = -travel * t
    elif motion == "moves right":
        dx = travel * t
    elif motion == "moves up":
        dy = -travel * t
    elif motion == "moves down":
        dy = travel * t
    elif motion == "grows":
        scale = 1.0 + 0.45 * t
    elif motion == "shrinks":
        scale = 1.0 - 0.45 * t
    elif motion != "stays still":
        raise ValueError(f"unknown motion {motion!r}")
    return dx, dy, scale


def render_clip(spec: ClipSpec) -> np.ndarray:
    """Frames as uint8 [T, H, W, 3]. In an ordered clip the first object moves in the first half,
    the second in the second half; each is still while the other moves."""
    rng = _rng("layout", spec.seed)
    s, n = spec.size, spec.frames
    frames = np.repeat(_background(spec)[None], n, axis=0)
    progress = np.linspace(-1.0, 1.0, n)
    k = len(spec.objects)
    for i, obj in enumerate(spec.objects):
        if k == 1:
            t = progress
            cx, cy = rng.uniform(0.38, 0.62, size=2) * s
        else:
            # first object: moves during the first half and rests at its end point;
            # second: rests at its start point, then moves during the second half
            half = np.linspace(-1.0, 1.0, n // 2)
            t = (
                np.concatenate([half, np.full(n - n // 2, 1.0)])
                if i == 0
                else np.concatenate([np.full(n - n // 2, -1.0), half])
            )
            lane = (0.3, 0.7)[i]
            cx, cy = (
                (lane * s, rng.uniform(0.4, 0.6) * s)
                if rng.random() < 0.5
                else (
                    rng.uniform(0.4, 0.6) * s,
                    lane * s,
                )
            )
        r = s * (0.11 if k > 1 else 0.14)
        dx, dy, scale = _trajectory(obj.motion, t, s)
        colour = np.array(COLOURS[obj.colour], dtype=np.float32)
        for f in range(n):
            m = _mask(obj.shape, cx + dx[f], cy + dy[f], r * scale[f], s)
            frames[f][m] = colour
    return frames.round().astype(np.uint8)


def render_still(spec: ClipSpec) -> np.ndarray:
    """One frame, uint8 [H, W, 3]: the middle frame, which never shows the motion."""
    return render_clip(spec)[spec.frames // 2]


def clip_record(spec: ClipSpec) -> dict:
    """The json sidecar of an embedded clip (the webdataset contract)."""
    return {
        "key": spec.key,
        "source": f"embedded://{spec.split}/{spec.key}",
        "split": spec.split,
        "start": 0.0,
        "end": spec.frames / spec.fps,
        "fps": spec.fps,
        "width": spec.size,
        "height": spec.size,
        "frames": spec.frames,
        "alt_text": alt_text(spec),
        "ground_truth": ground_truth_caption(spec),
        "still_caption": still_caption(spec),
        "attributes": spec.attributes(),
    }
