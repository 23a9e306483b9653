"""BERT-style bidirectional text tower with [CLS] pooling (small, pre-LN)."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from vlalign.models import attention
from vlalign.models.vit import Encoder

Dtype = Any


class TextTransformer(nn.Module):
  """Token + position embeddings, padding-masked encoder, [CLS] (position 0) output."""
  vocab_size: int
  max_len: int = 32
  width: int = 256
  depth: int = 4
  num_heads: int = 4
  mlp_ratio: float = 4.0
  pad_id: int = 0
  # The end token's id when padding cannot be told from text by id (CLIP's BPE pads with '!').
  eos_id: int | None = None
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, tokens: jnp.ndarray, train: bool = False, return_tokens: bool = False,
               return_levels: bool = False):
    """[CLS] features [n, width]; with `return_tokens` also every position's [n, L, width];
    with `return_levels` (instead) also the [CLS] output of every layer through the final
    LayerNorm, [n, depth, width]."""
    if tokens.shape[1] > self.max_len:
      raise ValueError(f'text length {tokens.shape[1]} exceeds model.text.max_len={self.max_len}')
    x = nn.Embed(self.vocab_size, self.width, embedding_init=nn.initializers.normal(0.02),
                 name='token_embed')(tokens).astype(self.dtype)
    pos = self.param('pos_embed', nn.initializers.normal(0.02), (1, self.max_len, self.width))
    x = x + pos[:, :tokens.shape[1]].astype(self.dtype)
    valid = attention.text_positions(tokens, self.pad_id, self.eos_id)
    mask = nn.make_attention_mask(valid, valid)
    encoder = Encoder(self.depth, self.num_heads, int(self.width * self.mlp_ratio),
                      self.dropout, self.dtype, self.remat, name='encoder')
    if return_levels:
      x, levels = encoder(x, mask, train, return_levels=True)
      return x[:, 0], levels
    x = encoder(x, mask, train)
    return (x[:, 0], x) if return_tokens else x[:, 0]
