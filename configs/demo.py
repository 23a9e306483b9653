"""Demo: a small ViT + text transformer on the embedded shapes data; a few minutes on a CPU.

get_config(arg): arg is a comma-separated list; `tiny` shrinks everything for tests.
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
  return config
