"""Procedural scenes of coloured shapes: attribute tables, sampling and PIL rendering."""

import math
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64
COLORS = ('red', 'green', 'blue', 'yellow', 'purple', 'orange', 'pink', 'cyan')
RGB = ((220, 30, 30), (30, 170, 40), (30, 60, 230), (240, 220, 20), (140, 40, 180),
       (250, 140, 0), (250, 120, 190), (0, 210, 220))
SHAPES = ('circle', 'square', 'triangle', 'star', 'cross', 'diamond')
SIZES = ('small', 'large')
SIZE_PX = (16, 26)
# Quadrants of a 2x2 grid. A finer grid makes colour + position alone identify most scenes
# in a batch, and a contrastive model then has little reason to learn shape.
POSITIONS = ('top left', 'top right', 'bottom left', 'bottom right')
GRID = 2
STYLES = ('studio', 'sketch')
# (colour, shape) pairs that never appear in a training image; the held-out split uses them.
HELDOUT_COMBOS = (('red', 'star'), ('green', 'triangle'), ('blue', 'cross'),
                  ('yellow', 'diamond'), ('purple', 'circle'), ('cyan', 'square'))


class Obj(NamedTuple):
  """One object: indices into COLORS, SHAPES, SIZES, POSITIONS."""
  color: int
  shape: int
  size: int
  position: int


def _combo_ids() -> set[tuple[int, int]]:
  return {(COLORS.index(c), SHAPES.index(s)) for c, s in HELDOUT_COMBOS}


def sample_scene(rng: np.random.Generator, *, num_objects: int, heldout: bool,
                 novel: bool = False) -> list[Obj]:
  """Objects in distinct grid cells. Training scenes (heldout=False) never contain
  HELDOUT_COMBOS; a held-out scene with novel=True contains at least one of them."""
  banned = _combo_ids()
  cells = rng.choice(len(POSITIONS), size=num_objects, replace=False)
  objs = []
  for k, cell in enumerate(cells):
    while True:
      if heldout and novel and k == 0:
        color, shape = sorted(banned)[rng.integers(len(banned))]
      else:
        color, shape = int(rng.integers(len(COLORS))), int(rng.integers(len(SHAPES)))
      if heldout or (color, shape) not in banned:
        break
    objs.append(Obj(color, shape, int(rng.integers(len(SIZES))), int(cell)))
  order = rng.permutation(num_objects)
  return [objs[i] for i in order]


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
  if shape == 'triangle':
    angles = [-90, 30, 150]
    return [(cx + r * math.cos(math.radians(a)), cy + r * math.sin(math.radians(a)))
            for a in angles]
  if shape == 'diamond':
    return [(cx, cy - r), (cx + 0.75 * r, cy), (cx, cy + r), (cx - 0.75 * r, cy)]
  if shape == 'star':
    pts = []
    for i in range(10):
      rad = r if i % 2 == 0 else 0.45 * r
      a = math.radians(-90 + 36 * i)
      pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts
  if shape == 'cross':
    t = 0.33 * r
    return [(cx - t, cy - r), (cx + t, cy - r), (cx + t, cy - t), (cx + r, cy - t),
            (cx + r, cy + t), (cx + t, cy + t), (cx + t, cy + r), (cx - t, cy + r),
            (cx - t, cy + t), (cx - r, cy + t), (cx - r, cy - t), (cx - t, cy - t)]
  raise ValueError(shape)


def _draw_object(draw: ImageDraw.ImageDraw, obj: Obj, style: str,
                 rng: np.random.Generator) -> None:
  cell = IMAGE_SIZE / GRID
  row, col = divmod(obj.position, GRID)
  r = SIZE_PX[obj.size] / 2
  jitter = max(cell / 2 - r - 1, 0)
  cx = (col + 0.5) * cell + rng.uniform(-jitter, jitter)
  cy = (row + 0.5) * cell + rng.uniform(-jitter, jitter)
  rgb = RGB[obj.color]
  shape = SHAPES[obj.shape]
  fill, outline, width = (rgb, None, 0) if style == "studio" else (None, rgb, 2 + obj.size)
  box = [cx - r, cy - r, cx + r, cy + r]
  if shape == 'circle':
    draw.ellipse(box, fill=fill, outline=outline, width=width)
  elif shape == 'square':
    s = 0.85 * r
    draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill, outline=outline, width=width)
  else:
    pts = _polygon(shape, cx, cy, r)
    if style == 'studio':
      draw.polygon(pts, fill=fill)
    else:
      draw.line(pts + [pts[0]], fill=outline, width=width, joint='curve')


def _background(style: str, rng: np.random.Generator) -> Image.Image:
  if style == 'studio':
    top, bottom = rng.uniform(70, 130), rng.uniform(70, 130)
    ramp = np.linspace(top, bottom, IMAGE_SIZE)[:, None, None]
    arr = np.broadcast_to(ramp, (IMAGE_SIZE, IMAGE_SIZE, 3))
  else:
    base = rng.uniform(200, 235)
    arr = base + rng.normal(0, 10, (IMAGE_SIZE, IMAGE_SIZE, 1))
    arr = np.repeat(arr, 3, axis=2)
  return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), 'RGB')


def render(objs: list[Obj], style: str, rng: np.random.Generator) -> Image.Image:
  """64x64 RGB image of the objects in the given visual style (grey backgrounds only)."""
  img = _background(style, rng)
  draw = ImageDraw.Draw(img)
  for obj in objs:
    _draw_object(draw, obj, style, rng)
  return img
