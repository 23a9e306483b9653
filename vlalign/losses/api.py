"""One entry point from `config.loss` to the contrastive objective the train step minimises.

loss.name   'softmax' (ALIGN / CLIP, symmetric cross-entropy) or 'sigmoid' (SigLIP)
loss.impl   'gather':    local rows x all-gathered columns, b x B logits per device
            'blockwise': never b x B logits: softmax walks the gathered columns in chunks of
                         loss.chunk (b x chunk); sigmoid passes the texts round the device ring
                         (b x b)
"""

from typing import Any, Mapping, Sequence

import jax.numpy as jnp
from jax.sharding import Mesh

from vlalign.losses import blockwise, contrastive, sigmoid

NAMES = ('softmax', 'sigmoid')
IMPLS = ('gather', 'blockwise')


def compute(loss_cfg: Any, out: Mapping[str, jnp.ndarray], mesh: Mesh,
            batch_axes: Sequence[str]) -> dict[str, jnp.ndarray]:
  """Loss dict (replicated scalars, 'loss' among them) for model outputs `out`: normalised
  'image' and 'text' embeddings [B, d] sharded on batch_axes, logit 'scale' and, for the sigmoid
  loss, an optional logit 'bias' (0 when the model has none)."""
  name, impl = loss_cfg.name, loss_cfg.get('impl', 'gather')
  if impl not in IMPLS:
    raise ValueError(f'config.loss.impl: {impl!r} is not one of {list(IMPLS)}')
  x, y, scale = out['image'], out['text'], out['scale']
  if name == 'softmax':
    kwargs = dict(batch_axes=batch_axes, label_smoothing=loss_cfg.label_smoothing,
                  reduction=loss_cfg.reduction)
    if impl == 'blockwise':
      return blockwise.softmax_contrastive(x, y, scale, mesh, chunk=loss_cfg.chunk, **kwargs)
    return contrastive.softmax_contrastive(x, y, scale, mesh, **kwargs)
  if name == 'sigmoid':
    bias = out.get('bias', jnp.zeros((), jnp.float32))
    return sigmoid.sigmoid_loss(x, y, scale, bias, mesh, batch_axes=batch_axes,
                                impl='ring' if impl == 'blockwise' else 'gather')
  raise ValueError(f'config.loss.name: {name!r} is not one of {list(NAMES)}')
