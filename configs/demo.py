"""Demo: a small ViT + text transformer on the embedded shapes data; about 9 minutes on 2 CPU
cores.

get_config(arg): arg is a comma-separated list of options:
  (none)  64-px images, a 'hybrid' stem (4x4 linear patchify, then stride-2 3x3 convolutions)
          down to a 2 x 2 token grid (the scenes' quadrants), 4 ViT blocks of width 128, a
          2-layer text transformer, 650 steps of 512 (docs/BENCHMARKS.md, "Demo run"). The
          stem's convolutions run as matmuls (model.image.stem_conv): the same model, about
          2x faster on XLA:CPU.
  conv    a full 3x3 conv stem from 64 px, 600 steps (zero-shot shape 0.91 against the
          default's 0.85, at 10.5 min: over the demo's 10-minute budget on 2 cores).
  v48     the towers before 2026-11-23: 48-px images, conv stem to a 3 x 3 grid, 600 steps
          (shape 0.62).
          The recipes' `small` variants and the data-efficiency table use these, which keeps
          their recorded results reproducible.
  tiny    a seconds-long variant for tests (48 px, width 32, 6 steps).
"""

from vlalign import config_lib

OPTIONS = ('conv', 'v48', 'tiny')


def get_config(arg: str = ''):
  """The demo config with the options in `arg` (see the module docstring)."""
  args = config_lib.parse_variants(arg, OPTIONS, __file__)
  config = config_lib.base_config()
  # 650 steps: shape 0.830 / 0.851 / 0.908 at 600 / 650 / 700 steps, 8.1 / 9.0 / 9.5 min
  # (docs/BENCHMARKS.md, "Demo run").
  config.total_steps = 650
  config.data.global_batch = 512
  config.optimizer.lr = 3e-3
  config.optimizer.warmup_steps = 50
  # Convolutions see shape; a 2 x 2 grid of 32-px patches at 64 px (shape 0.80 vs 0.62 for 48 px
  # and 16-px patches, at fewer FLOPs: docs/BENCHMARKS.md, "Shape, 2026-11-23").
  config.data.update(image_size=64, resize_size=68)
  # The stem's convolutions as matmuls: same model, about 2x faster stem on XLA:CPU
  # (docs/BENCHMARKS.md, "Demo step").
  config.model.image.update(stem='hybrid', patch=32, stem_conv='matmul')
  if 'conv' in args:
    config.model.image.stem = 'conv'
  if 'conv' in args or 'v48' in args:
    config.total_steps = 600  # as their recorded runs
  if 'v48' in args or 'tiny' in args:
    # lax's convolutions, as the recorded v48 runs had them (matmul agrees to round-off only).
    config.data.update(image_size=48, resize_size=52)
    config.model.image.update(stem='conv', patch=16, stem_conv='xla')
  config.model.text.update(width=96, depth=2)
  config.model.temperature_init = 0.07
  config.log_every = 25
  config.checkpoint_every = 100
  if 'tiny' in args:
    config.total_steps = 6
    config.data.global_batch = 16
    config.data.embedded.train_sizes = {'studio': 240, 'sketch': 160}
    config.data.embedded.heldout_size = 100
    config.data.embedded.num_shards = 4
    config.data.embedded.vocab_size = 300
    config.data.shuffle_buffer = 64
    config.data.eval_batch = 50
    config.model.image.update(width=32, depth=1, num_heads=2, patch=8)
    config.model.text.update(width=32, depth=1, num_heads=2)
    config.model.embed_dim = 32
    config.optimizer.warmup_steps = 2
    config.log_every = 2
    config.checkpoint_every = 2
  return config_lib.finish(config)
