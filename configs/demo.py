"""Demo: a small ViT + text transformer on the embedded shapes data; a few minutes on a CPU.

get_config(arg): arg is a comma-separated list; `tiny` shrinks everything for tests; `hires`
feeds 64-px images through a one-layer-deeper conv stem (patch 32: a 2 x 2 token grid, the
scenes' quadrants). On the embedded data `hires` reaches zero-shot shape 0.88 (the default: 0.62)
at fewer FLOPs per step, but XLA:CPU runs its convolutions slowly: about 14.5 min instead of
about 9 on 2 cores (docs/BENCHMARKS.md, "Shape, 2026-11-23").
"""

from vlalign import config_lib


def get_config(arg: str = ''):
  """The demo config; `tiny` gives a seconds-long variant for tests."""
  args = set(filter(None, (arg or '').split(',')))
  config = config_lib.base_config()
  config.total_steps = 600
  config.data.global_batch = 512
  config.optimizer.lr = 3e-3
  config.optimizer.warmup_steps = 50
  # A convolutional stem with 16-px patches: 9 tokens per 48-px image, and convolutions see shape.
  config.model.image.update(stem='conv', patch=16)
  config.model.text.update(width=96, depth=2)
  config.model.temperature_init = 0.07
  config.log_every = 25
  config.checkpoint_every = 100
  unknown = args - {'tiny', 'hires'}
  if unknown:
    raise ValueError(f'configs/demo.py: unknown option(s) {sorted(unknown)}; known: hires, tiny')
  if 'hires' in args:
    config.data.update(image_size=64, resize_size=68)
    config.model.image.patch = 32
  if 'tiny' in args:
    config.total_steps = 6
    config.data.global_batch = 16
    config.data.embedded.train_sizes = {'studio': 240, 'sketch': 160}
    config.data.embedded.heldout_size = 100
    config.data.embedded.num_shards = 4
    config.data.embedded.vocab_size = 300
    config.data.shuffle_buffer = 64
    config.data.eval_batch = 50
    config.model.image.update(width=32, depth=1, num_heads=2,
                              patch=32 if 'hires' in args else 8)
    config.model.text.update(width=32, depth=1, num_heads=2)
    config.model.embed_dim = 32
    config.optimizer.warmup_steps = 2
    config.log_every = 2
    config.checkpoint_every = 2
  return config
