"""BERT text tower (Devlin et al. 2019): post-LN encoder, token + position + type embeddings,
[CLS] (position 0) output, optional tanh pooler. Sizes follow Google's BERT releases."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from vlalign.models import attention
from vlalign.models.attention import SelfAttention

Dtype = Any

# name -> (layers, width); heads = width / 64, feed-forward = 4 x width.
SIZES = {'tiny': (2, 128), 'mini': (4, 256), 'small': (4, 512), 'medium': (8, 512),
         'base': (12, 768), 'large': (24, 1024)}

bert_init = nn.initializers.truncated_normal(0.02)
LN_EPSILON = 1e-12


class BertLayer(nn.Module):
  """Post-LN block: x = LN(x + attn(x)); x = LN(x + FFN(x)), FFN with exact (erf) GELU."""
  num_heads: int
  mlp_dim: int
  dropout: float = 0.1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    drop = lambda t: nn.Dropout(self.dropout, deterministic=not train)(t)
    y = SelfAttention(self.num_heads, self.dropout, self.dtype, bert_init, name='attn')(
        x, mask, train)
    x = nn.LayerNorm(LN_EPSILON, dtype=self.dtype, name='ln_attn')(x + drop(y))
    y = nn.Dense(self.mlp_dim, dtype=self.dtype, kernel_init=bert_init, name='fc1')(x)
    y = nn.Dense(x.shape[-1], dtype=self.dtype, kernel_init=bert_init,
                 name='fc2')(nn.gelu(y, approximate=False))
    return nn.LayerNorm(LN_EPSILON, dtype=self.dtype, name='ln_mlp')(x + drop(y))


class Bert(nn.Module):
  """BERT encoder over token ids [n, L] (pad_id = padding); returns [n, width].

  `size` names a standard configuration; `depth` / `width` / `num_heads` > 0 override it. `max_position`
  is the size of the position table (512 in BERT), `max_len` the longest input accepted.
  """
  vocab_size: int
  max_len: int = 64
  size: str = 'base'
  depth: int = 0
  width: int = 0
  num_heads: int = 0  # 0: width / 64 (at least 1)
  max_position: int = 512
  type_vocab_size: int = 2
  pooler: bool = False
  pad_id: int = 0
  # The end token's id when padding cannot be told from text by id (CLIP's BPE pads with '!').
  eos_id: int | None = None
  dropout: float = 0.1
  dtype: Dtype = jnp.float32
  remat: bool = False

  def dims(self) -> tuple[int, int]:
    """(depth, width) in use."""
    if self.size not in SIZES:
      raise ValueError(f'model.text.size must be one of {sorted(SIZES)}, got {self.size!r}')
    depth, width = SIZES[self.size]
    return self.depth or depth, self.width or width

  @nn.compact
  def __call__(self, tokens: jnp.ndarray, train: bool = False, return_tokens: bool = False,
               return_levels: bool = False):
    """[CLS] features [n, width]; with `return_tokens` also every position's [n, L, width];
    with `return_levels` (instead) also the [CLS] output of every layer [n, depth, width]
    (post-LN layers: already normalised; before the optional pooler)."""
    depth, width = self.dims()
    length = tokens.shape[1]
    if length > min(self.max_len, self.max_position):
      raise ValueError(f'text length {length} exceeds model.text.max_len={self.max_len} '
                       f'or max_position={self.max_position}')
    embed = lambda n, name: nn.Embed(n, width, embedding_init=bert_init, name=name)
    x = embed(self.vocab_size, 'token_embed')(tokens)
    x = x + embed(self.max_position, 'pos_embed')(jnp.arange(length)[None])
    x = x + embed(self.type_vocab_size, 'type_embed')(jnp.zeros_like(tokens))
    x = nn.LayerNorm(LN_EPSILON, dtype=self.dtype, name='ln_embed')(x.astype(self.dtype))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    valid = attention.text_positions(tokens, self.pad_id, self.eos_id)
    mask = nn.make_attention_mask(valid, valid)
    layer = nn.remat(BertLayer, static_argnums=(3,)) if self.remat else BertLayer
    levels = []
    for i in range(depth):
      x = layer(self.num_heads or max(1, width // 64), 4 * width, self.dropout, self.dtype,
                name=f'layer{i}')(x, mask, train)
      levels.append(x[:, 0])
    cls = x[:, 0]
    if self.pooler:
      cls = jnp.tanh(nn.Dense(width, dtype=self.dtype, kernel_init=bert_init, name='pooler')(cls))
    if return_levels:
      return cls, jnp.stack(levels, axis=1)
    return (cls, x) if return_tokens else cls
