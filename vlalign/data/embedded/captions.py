"""Captions for scenes: varied clean phrasings per style, and web-alt-text-like noise."""

import numpy as np

from vlalign.data.embedded.scenes import COLORS, POSITIONS, SHAPES, SIZES, Obj

NOISE_KINDS = ('filename', 'unrelated', 'partial', 'wrong')
_UNRELATED = (
    'free shipping on orders over 50 dollars', 'click to enlarge', 'image may contain',
    'stock photo', 'untitled', 'home page banner', 'best deals of the week', 'no description',
    'thumbnail', 'photo by unknown', 'download now', 'product image 3 of 5',
)
_PREP = {'top left': 'in the top left', 'top': 'at the top', 'top right': 'in the top right',
         'left': 'on the left', 'center': 'in the center', 'right': 'on the right',
         'bottom left': 'in the bottom left', 'bottom': 'at the bottom',
         'bottom right': 'in the bottom right'}
_NUM = {1: 'one', 2: 'two', 3: 'three'}


def _names(o: Obj) -> tuple[str, str, str, str]:
  return COLORS[o.color], SHAPES[o.shape], SIZES[o.size], POSITIONS[o.position]


def _studio_phrase(o: Obj, variant: int, with_position: bool) -> str:
  color, shape, size, pos = _names(o)
  if not with_position:
    return f'a {color} {shape}, {size}' if variant == 2 else f'a {size} {color} {shape}'
  if variant == 0:
    return f'a {size} {color} {shape} {_PREP[pos]}'
  if variant == 1:
    return f'{_PREP[pos]} a {size} {color} {shape}'
  return f'a {color} {shape}, {size}, {_PREP[pos]}'


# Studio captions name positions this often. Positions that are always named make colour +
# position identify nearly every scene in a batch, and the model then never needs shape.
POSITION_RATE = 0.1


def studio_caption(objs: list[Obj], rng: np.random.Generator) -> str:
  """A descriptive sentence naming every object's size, colour and shape, and in about half
  of the captions its position."""
  variant = int(rng.integers(3))
  with_position = bool(rng.random() < POSITION_RATE)
  parts = [_studio_phrase(o, variant, with_position) for o in objs]
  body = parts[0] if len(parts) == 1 else ', '.join(parts[:-1]) + ' and ' + parts[-1]
  opener = int(rng.integers(4))
  if opener == 0 or (with_position and variant == 1 and opener != 2):  # body already starts with the position
    return body
  if opener == 1:
    return f'there is {body}'
  if opener == 2:
    noun = 'shape' if len(objs) == 1 else 'shapes'
    return f'{_NUM[len(objs)]} {noun}: {body}'
  return f'a picture of {body}'


def sketch_caption(objs: list[Obj], rng: np.random.Generator) -> str:
  """Alt-text / tag style: short tags per object and a style suffix."""
  tags = []
  for o in objs:
    color, shape, size, pos = _names(o)
    pos = pos.replace(' ', '-')
    if rng.integers(2):
      tags.append(f'{size} {color} {shape} {pos}')
    else:
      tags.append(f'{color} {shape} ({size}, {pos})')
  suffix = ('clipart', 'line drawing', 'sketch', 'outline icon')[int(rng.integers(4))]
  joiner = (', ', ' + ', ' ; ')[int(rng.integers(3))]
  if rng.integers(2):
    return f'{joiner.join(tags)} | {suffix}'
  return f'{suffix} of {joiner.join(tags)}'


def clean_caption(objs: list[Obj], style: str, rng: np.random.Generator) -> str:
  """Clean caption in the source's style."""
  return studio_caption(objs, rng) if style == 'studio' else sketch_caption(objs, rng)


def noisy_caption(objs: list[Obj], style: str, kind: str, rng: np.random.Generator) -> str:
  """A caption that is wrong the way web alt-text is wrong (kind in NOISE_KINDS)."""
  if kind == 'filename':
    stem = ('IMG_', 'DSC', 'image', 'photo-', 'Screenshot_')[int(rng.integers(5))]
    ext = ('.jpg', '.JPG', '.png', '.jpeg')[int(rng.integers(4))]
    return f'{stem}{int(rng.integers(10000)):04d}{ext}'
  if kind == 'unrelated':
    return _UNRELATED[int(rng.integers(len(_UNRELATED)))]
  if kind == 'partial':
    o = objs[int(rng.integers(len(objs)))]
    color, shape, _, _ = _names(o)
    return (f'a {shape}', f'something {color}', f'{color} {shape}', 'some shapes')[
        int(rng.integers(4))]
  if kind == 'wrong':
    wrong = []
    for o in objs:
      if rng.integers(2):
        o = o._replace(color=int((o.color + 1 + rng.integers(len(COLORS) - 1)) % len(COLORS)))
      else:
        o = o._replace(shape=int((o.shape + 1 + rng.integers(len(SHAPES) - 1)) % len(SHAPES)))
      wrong.append(o)
    return clean_caption(wrong, style, rng)
  raise ValueError(f'unknown noise kind {kind!r}')
