"""Reading checkpoints (safetensors only) and fitting named arrays into a flax parameter tree."""

import json
import os
from typing import Any, Mapping

import jax
import numpy as np

PICKLE_SUFFIXES = ('.bin', '.pt', '.pth', '.ckpt', '.pkl', '.pickle')

CONVERT_HINT = (
    'convert it once where torch is installed: python -c "import torch, safetensors.torch as s; '
    "d = torch.load('IN', map_location='cpu', weights_only=True); d = d.get('state_dict', d); "
    "s.save_file({k: v.contiguous() for k, v in d.items()}, 'OUT.safetensors')\"")


class WeightsError(ValueError):
  """A checkpoint that cannot be read or does not fit the model (the message lists why)."""


def _is_pickle(path: str) -> bool:
  if path.endswith(PICKLE_SUFFIXES):
    return True
  with open(path, 'rb') as f:
    head = f.read(2)
  return head[:1] == b'\x80' or head == b'PK'  # a pickle protocol byte / torch's zip format


def checkpoint_files(path: str) -> list[str]:
  """The safetensors file(s) of `path`: a file, or a directory holding model.safetensors or a
  sharded model.safetensors.index.json (Hugging Face's layout)."""
  if os.path.isdir(path):
    index = os.path.join(path, 'model.safetensors.index.json')
    if os.path.exists(index):
      with open(index) as f:
        shards = sorted(set(json.load(f)['weight_map'].values()))
      return [os.path.join(path, s) for s in shards]
    names = sorted(n for n in os.listdir(path) if n.endswith('.safetensors'))
    if not names:
      raise WeightsError(f'{path}: no .safetensors file in this directory')
    return [os.path.join(path, names[0] if len(names) == 1 else 'model.safetensors')]
  if not os.path.exists(path):
    raise WeightsError(f'{path}: no such checkpoint file')
  return [path]


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """Every tensor of the checkpoint at `path` as a NumPy array (float32 for floating types);
  a pickle checkpoint is refused (nothing is ever unpickled)."""
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  out = {}
  for name in checkpoint_files(path):
    if _is_pickle(name):
      raise WeightsError(f'{name}: a pickle checkpoint, which vlalign does not read; '
                         f'{CONVERT_HINT}')
    try:
      tensors = load_file(name)
    except Exception as e:  # pylint: disable=broad-except
      raise WeightsError(f'{name}: not a readable safetensors file ({e})') from e
    for k, v in tensors.items():
      out[k] = v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v
  return out


def strip_prefix(tensors: Mapping[str, np.ndarray], prefixes: tuple[str, ...]) -> dict:
  """The tensors with the first of `prefixes` that some name carries removed from every name
  that has it (e.g. 'bert.' in BertForPreTraining checkpoints)."""
  for p in prefixes:
    if any(k.startswith(p) for k in tensors):
      return {k[len(p):] if k.startswith(p) else k: v for k, v in tensors.items()}
  return dict(tensors)


def flat_shapes(tree: Any) -> dict[str, tuple]:
  """'a/b/c' -> shape for every leaf of a (possibly abstract) pytree of nested dicts."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {'/'.join(str(getattr(k, 'key', k)) for k in path): tuple(x.shape)
          for path, x in leaves}


def check_fit(loaded: Mapping[str, np.ndarray], target: Mapping[str, tuple],
              source: str) -> list[str]:
  """Raises WeightsError listing every loaded array whose shape differs from the target's or
  which the target lacks; returns the target names the load leaves as initialised."""
  errors = [f'  {k}: checkpoint {tuple(v.shape)}, model {target[k]}'
            for k, v in sorted(loaded.items()) if k in target and tuple(v.shape) != target[k]]
  errors += [f'  {k}: not a parameter of the model' for k in sorted(loaded) if k not in target]
  if errors:
    raise WeightsError(f'{source}: {len(errors)} parameter(s) do not fit the configured model:\n'
                       + '\n'.join(errors))
  return sorted(k for k in target if k not in loaded)


def resize_pos_embed(pos: np.ndarray, tokens: int) -> np.ndarray:
  """A [..., 1 + g*g, d] position table (class token first) resized to `tokens` = 1 + G*G rows:
  the class row kept, the g x g grid resampled bicubically with antialiasing (as open_clip's
  and timm's loaders do with torch's interpolate(bicubic, antialias=True))."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  old, new = int(round((pos.shape[-2] - 1) ** 0.5)), int(round((tokens - 1) ** 0.5))
  if old * old + 1 != pos.shape[-2] or new * new + 1 != tokens:
    raise WeightsError(f'cannot resize a position table of {pos.shape[-2]} rows to {tokens}: '
                       'both must be a class row plus a square grid')
  lead, d = pos.shape[:-2], pos.shape[-1]
  grid = pos[..., 1:, :].reshape(-1, old, old, d)
  resize = lambda g: jax.image.resize(g, (g.shape[0], new, new, d), 'bicubic', antialias=True)
  grid = jax.jit(resize)(jnp.asarray(grid))
  grid = np.asarray(grid).reshape(*lead, new * new, d)
  return np.concatenate([pos[..., :1, :], grid], axis=-2)


# Mapped names that start with this are batch-norm statistics (the 'batch_stats' collection),
# not parameters.
STATS = 'batch_stats:'


def batch_norm(tensors: Mapping[str, np.ndarray], src: str, dst: str) -> dict[str, np.ndarray]:
  """A PyTorch BatchNorm as flax's scale / bias parameters and mean / var statistics."""
  return {f'{dst}/scale': tensors[f'{src}.weight'], f'{dst}/bias': tensors[f'{src}.bias'],
          f'{STATS}{dst}/mean': tensors[f'{src}.running_mean'],
          f'{STATS}{dst}/var': tensors[f'{src}.running_var']}


def place(name: str, tower: str) -> str:
  """A mapped tower-relative name as a variable path: 'params/<tower>_tower/...' or
  'batch_stats/<tower>_tower/...'."""
  if name.startswith(STATS):
    return f'batch_stats/{tower}_tower/{name[len(STATS):]}'
  return f'params/{tower}_tower/{name}'


def ln(tensors: Mapping[str, np.ndarray], src: str, dst: str) -> dict[str, np.ndarray]:
  """A PyTorch LayerNorm (weight, bias) as flax's (scale, bias)."""
  return {f'{dst}/scale': tensors[f'{src}.weight'], f'{dst}/bias': tensors[f'{src}.bias']}


def dense(tensors: Mapping[str, np.ndarray], src: str, dst: str,
          bias: bool = True) -> dict[str, np.ndarray]:
  """A PyTorch Linear ([out, in] weight) as flax's Dense ([in, out] kernel)."""
  out = {f'{dst}/kernel': tensors[f'{src}.weight'].T}
  if bias:
    out[f'{dst}/bias'] = tensors[f'{src}.bias']
  return out


def conv(weight: np.ndarray) -> np.ndarray:
  """A PyTorch conv weight [out, in, kh, kw] as flax's kernel [kh, kw, in, out]."""
  return weight.transpose(2, 3, 1, 0)


def read_json(path: str) -> dict:
  """A JSON object from `path` ({} when path is empty)."""
  if not path:
    return {}
  with open(path) as f:
    return json.load(f)
