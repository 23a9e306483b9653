"""Inference with a trained (or imported) model: only its directory is needed.

  from vlalign import inference
  model = inference.load('workdirs/demo')          # <dir>/config.json + <dir>/checkpoints/<step>
  img = model.encode_image(model.preprocess(['cat.png', uint8_array]))   # [N, d] float32, unit norm
  txt = model.encode_text(['a red circle', 'two blue squares'])          # [M, d] float32, unit norm
  logits = model.logit_scale * img @ txt.T (+ model.logit_bias for a sigmoid-loss model)

load() reads the run's resolved config (written by every run at start), builds the tokenizer the
run used (train.make_tokenizer over config.data.tokenizer, or the embedded dataset's learned
vocabulary, which must exist: nothing is generated) and restores only the parameters and the
model state (batch-norm statistics) of a checkpoint: no optimizer state, no data, no mesh.
"""

import os
from typing import Any, Sequence

import numpy as np

CONFIG_FILE = 'config.json'


def resolve_config(config, workdir: str):
  """`config` when given (a --config override), else <workdir>/config.json (validated)."""
  from vlalign import config_lib  # pylint: disable=g-import-not-at-top
  if config is None:
    config = config_lib.load_json(os.path.join(workdir, CONFIG_FILE))
  config_lib.validate(config)
  return config


def vocab_path(config) -> str:
  """The vocabulary a run with `config` tokenized with; FileNotFoundError when it is absent."""
  from vlalign.data import tokenizers as tokenizers_lib  # pylint: disable=g-import-not-at-top
  path = tokenizers_lib.vocab_path(config.data)
  if not path:  # the embedded dataset's learned vocabulary, where prepare_data wrote it
    from vlalign.data.embedded import generator  # pylint: disable=g-import-not-at-top
    e = config.data.embedded
    key = generator._args_key(  # pylint: disable=protected-access
        seed=e.seed, train_sizes=dict(e.train_sizes), heldout_size=e.heldout_size,
        noise_fraction=e.noise_fraction, num_shards=e.num_shards, vocab_size=e.vocab_size)
    path = os.path.join(config.data.cache_dir, 'embedded', key, 'vocab.txt')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
        f'vocabulary {path} (config.data.tokenizer.vocab_file, or the embedded dataset under '
        f'config.data.cache_dir) does not exist; set --config.data.tokenizer.vocab_file or '
        f'$VLALIGN_DATA_DIR to where the run had it')
  return path


def checkpoint_steps(workdir: str) -> list[int]:
  """Steps of the complete checkpoints in <workdir>/checkpoints, oldest first."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  directory = os.path.join(workdir, 'checkpoints')
  if not tf.io.gfile.isdir(directory):
    return []
  names = [n.rstrip('/') for n in tf.io.gfile.listdir(directory)]
  return sorted(int(n) for n in names if n.isdigit() and
                tf.io.gfile.exists(os.path.join(directory, n, 'state')))


def restore_variables(workdir: str, step: int, abstract: dict) -> dict:
  """The `params` and `model_state` subtrees of the state saved at `step`, as host NumPy
  arrays shaped like `abstract` (a partial orbax restore: the optimizer state is not read)."""
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from vlalign import checkpoint  # pylint: disable=g-import-not-at-top
  step_dir = os.path.join(workdir, 'checkpoints', str(step))
  path = os.path.join(step_dir, 'state')
  # Checked from the metadata first: a partial restore into NumPy takes the saved shapes.
  diffs = [d for d in checkpoint.describe_mismatch(step_dir, abstract)
           if not d.endswith('only in the checkpoint')]  # optimizer state, method state
  if diffs:
    raise checkpoint.CheckpointMismatchError(
        f'{path} does not hold the model its config builds ({len(diffs)} differences): '
        + '; '.join(diffs[:20]))
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), abstract)
  return ocp.PyTreeCheckpointer().restore(path, args=ocp.args.PyTreeRestore(
      item=abstract, restore_args=restore_args, partial_restore=True))


def _pad_batches(data: np.ndarray, batch: int):
  """Yields (fixed-size batch, rows that are real) over `data`, the last batch padded."""
  for start in range(0, len(data), batch):
    chunk = data[start:start + batch]
    n = len(chunk)
    if n < batch:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
    yield chunk, n


class Model:
  """A loaded two-tower model: preprocess, encode_image, encode_text, logit_scale/bias."""

  def __init__(self, config, model, tokenizer, variables: dict, step: int, batch_size: int):
    import jax  # pylint: disable=g-import-not-at-top
    self.config, self.model, self.tokenizer, self.step = config, model, tokenizer, step
    self.batch_size = batch_size
    self.variables = jax.device_put(variables)
    self.image_size = config.data.image_size
    self._img = jax.jit(lambda v, x: model.apply(v, x, method='encode_image'))
    self._txt = jax.jit(lambda v, t: model.apply(v, t, method='encode_text'))
    self.logit_scale = float(model.apply(self.variables, method='logit_scale'))
    params = variables['params']
    self.logit_bias = float(params['logit_bias']) if 'logit_bias' in params else None

  def __repr__(self) -> str:
    return (f'vlalign.inference.Model(step={self.step}, image_size={self.image_size}, '
            f'image={self.config.model.image.name}, text={self.config.model.text.name})')

  def _run(self, fn, data: np.ndarray) -> np.ndarray:
    if len(data) == 0:
      return np.zeros((0, self.config.model.embed_dim), np.float32)
    outs = [np.asarray(fn(self.variables, chunk))[:n]
            for chunk, n in _pad_batches(data, self.batch_size)]
    return np.concatenate(outs).astype(np.float32)

  def encode_image(self, images) -> np.ndarray:
    """L2-normalised embeddings [N, d] of float32 images [N, S, S, 3] already preprocessed."""
    images = np.asarray(images, np.float32)
    want = (self.image_size, self.image_size, 3)
    if images.ndim != 4 or images.shape[1:] != want:
      raise ValueError(f'encode_image wants float32 [N, {want[0]}, {want[1]}, 3] normalised '
                       f'images, got shape {images.shape}: use preprocess() first')
    return self._run(self._img, images)

  def tokenize(self, texts: Sequence[str]) -> np.ndarray:
    """int32 token ids [N, max_len] as the model was trained with."""
    if isinstance(texts, (str, bytes)):
      raise TypeError('encode_text/tokenize take a list of strings, not one string')
    return np.asarray(self.tokenizer.tokenize(np.array(list(texts), dtype=object)), np.int32)

  def encode_text(self, texts: Sequence[str]) -> np.ndarray:
    """L2-normalised embeddings [N, d] of a list of captions."""
    return self._run(self._txt, self.tokenize(texts))

  def preprocess(self, images) -> np.ndarray:
    """float32 [N, S, S, 3] eval views (resize shorter side, centre crop, the config's pixel
    mean/std) of image file paths or uint8 arrays [H, W, 3] / [H, W] / a [N, H, W, 3] batch."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from vlalign.data import image_ops  # pylint: disable=g-import-not-at-top
    d = self.config.data
    if isinstance(images, np.ndarray) and images.ndim == 4:
      images = list(images)
    out = []
    for i, image in enumerate(images):
      img = _as_uint8(image, i)
      view = image_ops.eval_view(img, resize=d.resize_size, crop=d.image_size,
                                 **image_ops.pixel_stats(d))
      out.append(view.numpy())
    return np.stack(out) if out else np.zeros((0, d.image_size, d.image_size, 3), np.float32)


def _as_uint8(image: Any, i: int):
  """A uint8 [H, W, 3] tensor from a path (decoded) or an array (grey -> RGB)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from vlalign.data import image_ops  # pylint: disable=g-import-not-at-top
  if isinstance(image, (str, os.PathLike)):
    with tf.io.gfile.GFile(os.fspath(image), 'rb') as f:
      return image_ops.decode(tf.constant(f.read()))
  array = np.asarray(image)
  if array.dtype != np.uint8:
    raise ValueError(f'preprocess: image {i} is {array.dtype}; give uint8 pixels or a file path')
  if array.ndim == 2:
    array = np.repeat(array[..., None], 3, axis=-1)
  if array.ndim != 3 or array.shape[-1] != 3:
    raise ValueError(f'preprocess: image {i} has shape {array.shape}, not [H, W, 3] or [H, W]')
  return tf.constant(array)


def load(path: str, step: int | None = None, config=None, batch_size: int | None = None) -> Model:
  """The model in `path` (a training workdir, or an imported one in the same layout) at `step`
  (default: the newest checkpoint); `config` overrides <path>/config.json; `batch_size`
  (default config.data.eval_batch) is the fixed size each jitted call sees."""
  import jax  # pylint: disable=g-import-not-at-top
  from vlalign import train  # pylint: disable=g-import-not-at-top
  path = os.path.abspath(path) if '://' not in path else path
  config = resolve_config(config, path)
  from vlalign import checkpoint  # pylint: disable=g-import-not-at-top
  step = checkpoint.pick_step(checkpoint_steps(path), step, os.path.join(path, 'checkpoints'))
  tokenizer = train.make_tokenizer(config, vocab_path(config))
  model = train.build_model(config, tokenizer)
  d = config.data
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          np.zeros((1, d.image_size, d.image_size, 3), np.float32),
                          np.zeros((1, d.max_len), np.int32))
  shapes = dict(shapes)
  abstract = {'params': shapes.pop('params')}
  if shapes:
    abstract['model_state'] = shapes
  restored = restore_variables(path, step, abstract)
  variables = {'params': restored['params'], **restored.get('model_state', {})}
  return Model(config, model, tokenizer, variables, step, batch_size or d.eval_batch)
