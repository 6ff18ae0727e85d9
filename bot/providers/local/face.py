"""The local avatar's drawn 2D face: a few looks, idle motion and mouth shapes from visemes.

Everything that does not move (background, shoulders, head, hair, nose, brows) is painted once per
session into a canvas a little larger than the frame; each frame is a shifted crop of it (the
slight head movement) with the eyes and the mouth painted on top. That keeps a 640x480 frame near
a millisecond (``bench/local_avatar.py`` measures the whole pipeline). Every length is in drawing
units of ``height / 240`` pixels while edges stay anti-aliased over a pixel or two, so a larger
frame is sharper, not a blown-up small one.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

from bot.providers.local.speech import Voice

Color = tuple[int, int, int]


@dataclass(frozen=True)
class Look:
    """One built-in avatar: its colours, hair style and voice."""

    id: str
    name: str
    description: str
    skin: Color
    hair: Color
    hair_style: str  # "bob", "short", "bun" or "curly"
    iris: Color
    shirt: Color
    bg_top: Color
    bg_bottom: Color
    lips: Color
    voice: Voice


LOOKS: dict[str, Look] = {
    look.id: look
    for look in (
        Look("ada", "Ada", "Calm and friendly, a soft British voice.", (226, 176, 140),
             (70, 45, 35), "bob", (60, 120, 90), (40, 120, 130), (186, 214, 236),
             (112, 150, 200), (190, 95, 95), Voice("en-gb-x-rp+f2", rate=160, pitch=55)),
        Look("milo", "Milo", "Cheerful, with an American voice.", (246, 210, 182),
             (186, 92, 44), "short", (70, 110, 170), (214, 168, 50), (250, 222, 196),
             (232, 160, 130), (200, 110, 105), Voice("en-us+m3", rate=175, pitch=45)),
        Look("noor", "Noor", "Thoughtful and clear, unhurried.", (140, 92, 64),
             (32, 26, 26), "bun", (85, 55, 35), (120, 60, 120), (214, 200, 236),
             (150, 125, 195), (150, 70, 75), Voice("en-us+f3", rate=150, pitch=60)),
        Look("kai", "Kai", "Lively, with a Scottish voice.", (208, 156, 116),
             (40, 36, 48), "curly", (55, 45, 40), (60, 140, 90), (200, 232, 210),
             (120, 180, 150), (175, 90, 85), Voice("en-gb-scotland+m1", rate=185, pitch=48)),
    )
}
DEFAULT_LOOK = "ada"


@dataclass(frozen=True)
class MouthShape:
    """How the mouth looks: opening 0..1, width 0..1 and lip rounding 0..1."""

    open: float = 0.0
    width: float = 0.5
    round: float = 0.0


REST = MouthShape()
VISEME_SHAPES: dict[str, MouthShape] = {
    "rest": REST,
    "closed": MouthShape(0.0, 0.42, 0.1),
    "teeth": MouthShape(0.18, 0.5, 0.0),
    "tongue": MouthShape(0.3, 0.5, 0.0),
    "round": MouthShape(0.45, 0.25, 1.0),
    "open": MouthShape(1.0, 0.6, 0.0),
    "mid": MouthShape(0.6, 0.58, 0.0),
    "wide": MouthShape(0.3, 0.8, 0.0),
    "small": MouthShape(0.32, 0.5, 0.1),
}
_BLEND_MS = 60.0  # a mouth shape eases into the next over this long


def mouth_at(visemes: list[tuple[int, str]], pos_ms: float) -> MouthShape:
    """The mouth shape ``pos_ms`` into an utterance with these ``(start_ms, viseme)`` steps."""
    if not visemes or pos_ms < visemes[0][0]:
        return REST
    i = 0
    while i + 1 < len(visemes) and visemes[i + 1][0] <= pos_ms:
        i += 1
    cur = VISEME_SHAPES.get(visemes[i][1], REST)
    prev = VISEME_SHAPES.get(visemes[i - 1][1], REST) if i else REST
    k = min(1.0, (pos_ms - visemes[i][0]) / _BLEND_MS)
    return MouthShape(*(p + (c - p) * k for p, c in zip(
        (prev.open, prev.width, prev.round), (cur.open, cur.width, cur.round), strict=True)))


def _alpha(
    ys: np.ndarray, xs: np.ndarray, cx: float, cy: float, rx: float, ry: float
) -> np.ndarray:
    """Anti-aliased coverage of an ellipse on a pixel grid (about one pixel of soft edge)."""
    d = np.sqrt(((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2)
    return np.clip((1.0 - d) * min(rx, ry) + 0.5, 0.0, 1.0)


def _paint(canvas: np.ndarray, alpha: np.ndarray, color: Color | np.ndarray, box: tuple) -> None:
    """Blend ``color`` into the float canvas region ``box`` with coverage ``alpha``."""
    y0, y1, x0, x1 = box
    region = canvas[y0:y1, x0:x1]
    a = alpha[..., None]
    region += (np.asarray(color, dtype=np.float32) - region) * a


class _Grid:
    """Pixel-centre coordinates of a box of the canvas."""

    def __init__(self, shape: tuple[int, int], box: tuple[int, int, int, int]) -> None:
        h, w = shape
        y0, y1, x0, x1 = (max(0, box[0]), min(h, box[1]), max(0, box[2]), min(w, box[3]))
        self.box = (y0, y1, x0, x1)
        self.ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
        self.xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5

    def ellipse(self, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        """Coverage of an ellipse within this box."""
        return _alpha(self.ys, self.xs, cx, cy, max(rx, 0.5), max(ry, 0.5))


def _shade(color: Color, k: float) -> Color:
    return tuple(int(max(0, min(255, c * k))) for c in color)  # type: ignore[return-value]


class Face:
    """Draws one look at one size; ``render(t, mouth)`` gives the RGB frame at time ``t``."""

    def __init__(self, look: Look, width: int, height: int, seed: int = 0) -> None:
        self.look = look
        self.width, self.height = width, height
        self.u = height / 240.0  # drawing unit: one pixel at 240 lines
        self.margin = int(math.ceil(4 * self.u)) + 2
        self._rng = random.Random(seed)
        self._next_blink = 1.5 + self._rng.random() * 2
        self._next_gaze = 2.0
        self._gaze = (0.0, 0.0)
        m = self.margin
        self.hx, self.hy = width / 2 + m, height * 0.46 + m  # head centre on the canvas
        self.hrx, self.hry = 50 * self.u, 62 * self.u
        self.base = self._paint_base()

    # ---------------------------------------------------------------- the still picture
    def _paint_base(self) -> np.ndarray:
        lk, u, m = self.look, self.u, self.margin
        h, w = self.height + 2 * m, self.width + 2 * m
        top, bottom = np.array(lk.bg_top, np.float32), np.array(lk.bg_bottom, np.float32)
        k = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
        canvas = np.broadcast_to(top + (bottom - top) * k, (h, w, 3)).copy()
        full = _Grid((h, w), (0, h, 0, w))
        hx, hy, hrx, hry = self.hx, self.hy, self.hrx, self.hry
        # a soft light behind the head
        _paint(canvas, 0.25 * full.ellipse(hx, hy, 150 * u, 130 * u) ** 2, (255, 255, 255),
               full.box)
        if lk.hair_style in ("bob", "bun", "curly"):
            self._back_hair(canvas, full)
        # shoulders, neck and a round neckline with a collar rim
        _paint(canvas, full.ellipse(hx, hy + 150 * u, 105 * u, 72 * u), lk.shirt, full.box)
        neck_color = _shade(lk.skin, 0.86)
        below = full.ys > hy + 88 * u
        rim = full.ellipse(hx, hy + 94 * u, 30.5 * u, 16.5 * u) * below
        _paint(canvas, rim, _shade(lk.shirt, 0.8), full.box)
        _paint(canvas, full.ellipse(hx, hy + 94 * u, 28 * u, 14 * u) * below, neck_color, full.box)
        neck = full.ellipse(hx, hy + 80 * u, 24 * u, 34 * u) * (full.ys < hy + 96 * u)
        _paint(canvas, neck, neck_color, full.box)
        _paint(canvas, 0.5 * full.ellipse(hx, hy + 70 * u, 24 * u, 8 * u),
               _shade(lk.skin, 0.72), full.box)  # the chin's shadow on the neck
        # ears, head, cheeks, nose
        for side in (-1, 1):
            _paint(canvas, full.ellipse(hx + side * hrx * 0.97, hy + 4 * u, 9 * u, 14 * u),
                   _shade(lk.skin, 0.93), full.box)
        _paint(canvas, full.ellipse(hx, hy, hrx, hry), lk.skin, full.box)
        _paint(canvas, 0.35 * full.ellipse(hx, hy - 18 * u, hrx * 0.7, hry * 0.5) ** 2,
               _shade(lk.skin, 1.08), full.box)
        for side in (-1, 1):
            _paint(canvas, 0.28 * full.ellipse(hx + side * 28 * u, hy + 18 * u, 11 * u, 7 * u),
                   (235, 120, 120), full.box)
        _paint(canvas, 0.5 * full.ellipse(hx, hy + 12 * u, 5 * u, 4 * u),
               _shade(lk.skin, 0.78), full.box)
        self._front_hair(canvas, full)
        for side in (-1, 1):  # brows
            brow = full.ellipse(hx + side * 19 * u, hy - 16 * u, 12 * u, 3.2 * u)
            _paint(canvas, brow, _shade(lk.hair, 0.9), full.box)
        return np.clip(canvas, 0, 255).astype(np.uint8)

    def _back_hair(self, canvas: np.ndarray, g: _Grid) -> None:
        lk, u, hx, hy = self.look, self.u, self.hx, self.hy
        if lk.hair_style == "bob":
            a = g.ellipse(hx, hy + 2 * u, self.hrx * 1.3, self.hry * 1.12) * (g.ys < hy + 50 * u)
        elif lk.hair_style == "curly":
            a = np.zeros_like(g.ys * g.xs)
            for i in range(9):
                ang = math.pi * (0.95 + i * 1.1 / 8)
                cx = hx + math.cos(ang) * self.hrx * 1.02
                cy = hy - 8 * u + math.sin(ang) * self.hry * 0.95
                a = np.maximum(a, g.ellipse(cx, cy, 20 * u, 20 * u))
        else:  # bun
            a = g.ellipse(hx, hy - self.hry * 1.05, 26 * u, 22 * u)
        _paint(canvas, a, _shade(lk.hair, 0.85), g.box)

    def _front_hair(self, canvas: np.ndarray, g: _Grid) -> None:
        lk, u, hx, hy = self.look, self.u, self.hx, self.hy
        cap = g.ellipse(hx, hy - 6 * u, self.hrx * 1.06, self.hry * 1.02)
        # the fringe line dips towards one side, like a parting
        line = hy - 26 * u + 10 * u * np.cos((g.xs - hx + 12 * u) / (self.hrx * 0.9))
        if lk.hair_style in ("short", "curly"):
            line = hy - 34 * u + 6 * u * np.cos((g.xs - hx) / (self.hrx * 0.7))
        edge = np.clip((line - g.ys) / (1.5 * u) + 0.5, 0.0, 1.0)
        side = np.clip((np.abs(g.xs - hx) - self.hrx * 0.82) / (2 * u), 0.0, 1.0)
        # side locks end in a soft curve, lower for a bob
        end = hy + (20 if lk.hair_style == "bob" else -8) * u
        end = end - 10 * u * ((np.abs(g.xs - hx) - self.hrx * 0.82) / (self.hrx * 0.3)) ** 2
        side = side * np.clip((end - g.ys) / (1.5 * u) + 0.5, 0.0, 1.0)
        _paint(canvas, cap * np.maximum(edge, side), lk.hair, g.box)
        # a highlight on the hair
        shine = 0.18 * g.ellipse(hx - 18 * u, hy - 48 * u, 16 * u, 6 * u) * edge
        _paint(canvas, shine, (255, 255, 255), g.box)

    # ---------------------------------------------------------------- each frame
    def motion(self, t: float, speaking: bool) -> tuple[int, int]:
        """The head's offset in pixels at time ``t``: a slow sway and a breathing bob."""
        amp = 1.0 + (0.6 if speaking else 0.0)
        dx = (2.2 * math.sin(t * 2 * math.pi / 6.7) + 0.8 * math.sin(t * 2 * math.pi / 2.9)) * amp
        dy = 1.4 * math.sin(t * 2 * math.pi / 4.3) * amp
        lim = self.margin - 1
        return (max(-lim, min(lim, round(dx * self.u))), max(-lim, min(lim, round(dy * self.u))))

    def eye_openness(self, t: float) -> float:
        """1 when the eyes are open, down to 0 in the middle of a blink."""
        if t >= self._next_blink + 0.2:
            self._next_blink = t + 2.2 + self._rng.random() * 3.5
        phase = (t - self._next_blink) / 0.2
        return 1.0 if not 0.0 <= phase <= 1.0 else abs(1.0 - 2.0 * phase)

    def gaze(self, t: float) -> tuple[float, float]:
        """Where the irises point, in drawing units; it wanders now and then."""
        if t >= self._next_gaze:
            r = self._rng
            wander = r.random() < 0.5
            self._gaze = (r.uniform(-2.0, 2.0), r.uniform(-1.0, 1.0)) if wander else (0.0, 0.0)
            self._next_gaze = t + 1.5 + r.random() * 3.0
        return self._gaze

    def render(self, t: float, mouth: MouthShape = REST, speaking: bool = False) -> np.ndarray:
        """The RGB frame (height x width x 3, uint8) at ``t`` seconds with this mouth shape."""
        dx, dy = self.motion(t, speaking)
        m = self.margin
        frame = self.base[m - dy : m - dy + self.height, m - dx : m - dx + self.width].copy()
        cx, cy = self.hx - m + dx, self.hy - m + dy  # head centre in frame coordinates
        self._eyes(frame, cx, cy, self.eye_openness(t), self.gaze(t))
        self._mouth(frame, cx, cy + 32 * self.u, mouth)
        return frame

    def _region(
        self, frame: np.ndarray, cx: float, cy: float, rw: float, rh: float
    ) -> tuple[_Grid, np.ndarray]:
        g = _Grid(frame.shape[:2], (int(cy - rh), int(cy + rh) + 1, int(cx - rw), int(cx + rw) + 1))
        y0, y1, x0, x1 = g.box
        return g, frame[y0:y1, x0:x1].astype(np.float32)

    def _eyes(self, frame: np.ndarray, cx: float, cy: float, openness: float,
              gaze: tuple[float, float]) -> None:
        u = self.u
        for side in (-1, 1):
            ex, ey = cx + side * 19 * u, cy - 4 * u
            g, reg = self._region(frame, ex, ey, 12 * u, 9 * u)
            box = (0, reg.shape[0], 0, reg.shape[1])
            ys, xs = g.ys - g.box[0], g.xs - g.box[2]
            lx, ly = ex - g.box[2], ey - g.box[0]
            ry = max(0.6, 6.0 * u * openness)
            white = _alpha(ys, xs, lx, ly, 9 * u, ry)
            if openness > 0.25:
                _paint(reg, white, (250, 250, 248), box)
                ix, iy = lx + gaze[0] * u, ly + gaze[1] * u
                iris = _alpha(ys, xs, ix, iy, 4.6 * u, 4.6 * u) * white
                _paint(reg, iris, self.look.iris, box)
                _paint(reg, _alpha(ys, xs, ix, iy, 2.2 * u, 2.2 * u) * white, (20, 20, 24), box)
                _paint(reg, _alpha(ys, xs, ix - 1.4 * u, iy - 1.6 * u, 1.1 * u, 1.1 * u) * white,
                       (255, 255, 255), box)
            # the upper lid line (and the closed lid during a blink)
            lid = _alpha(ys, xs, lx, ly, 9.6 * u, ry + 1.2 * u) * (1.0 - white) * (ys < ly + 0.5)
            _paint(reg, lid, (40, 30, 30), box)
            frame[g.box[0] : g.box[1], g.box[2] : g.box[3]] = np.clip(reg, 0, 255).astype(np.uint8)

    def _mouth(self, frame: np.ndarray, cx: float, cy: float, shape: MouthShape) -> None:
        u, lips = self.u, self.look.lips
        g, reg = self._region(frame, cx, cy, 20 * u, 14 * u)
        box = (0, reg.shape[0], 0, reg.shape[1])
        ys, xs = g.ys - g.box[0], g.xs - g.box[2]
        mx, my = cx - g.box[2], cy - g.box[0]
        half_w = (9.0 + 6.0 * shape.width - 4.0 * shape.round) * u
        open_h = 11.0 * u * shape.open
        if open_h < 1.2 * u:
            # closed: a gentle smile, drawn as the lower rim of a flat ellipse
            rim = _alpha(ys, xs, mx, my - 3 * u, half_w, 4.5 * u)
            inner = _alpha(ys, xs, mx, my - 4.2 * u, half_w * 0.98, 4.5 * u)
            _paint(reg, np.clip(rim - inner, 0, 1) * (ys > my - 3 * u), _shade(lips, 0.7), box)
            _paint(reg, 0.6 * _alpha(ys, xs, mx, my + 2.2 * u, half_w * 0.55, 1.6 * u), lips, box)
        else:
            lip = (2.2 + 1.6 * shape.round) * u
            _paint(reg, _alpha(ys, xs, mx, my, half_w + lip, open_h / 2 + lip), lips, box)
            hole = _alpha(ys, xs, mx, my, half_w, open_h / 2)
            _paint(reg, hole, (70, 25, 30), box)
            teeth = hole * (ys < my - open_h / 2 + max(1.5 * u, open_h * 0.28))
            _paint(reg, teeth, (245, 244, 238), box)
            tongue = hole * _alpha(ys, xs, mx, my + open_h / 2, half_w * 0.6, open_h * 0.35)
            _paint(reg, tongue, (205, 95, 105), box)
        frame[g.box[0] : g.box[1], g.box[2] : g.box[3]] = np.clip(reg, 0, 255).astype(np.uint8)
