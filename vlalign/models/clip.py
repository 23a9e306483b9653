"""CLIP towers (Radford et al. 2021): ViT image tower and causal text transformer.

Both use pre-LN residual attention blocks with QuickGELU and end in a bias-free projection to
`output_dim` (0: no projection), as in the released CLIP models (LayerNorm eps 1e-5). `act='gelu'`
(exact erf GELU) gives OpenCLIP's default for models trained from scratch.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from vlalign.models import attention
from vlalign.models import vit
from vlalign.models.attention import SelfAttention

Dtype = Any


def quick_gelu(x: jnp.ndarray) -> jnp.ndarray:
  """CLIP's GELU approximation x * sigmoid(1.702 x)."""
  return x * nn.sigmoid(1.702 * x)


ACTIVATIONS = {'quick_gelu': quick_gelu, 'gelu': lambda x: nn.gelu(x, approximate=False)}


class ResidualBlock(nn.Module):
  """x + attn(LN(x)); x + MLP(LN(x)) with a 4x MLP (QuickGELU by default)."""
  num_heads: int
  dtype: Dtype = jnp.float32
  act: str = 'quick_gelu'
  ln_eps: float = 1e-5  # PyTorch LayerNorm default, as CLIP and OpenCLIP

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: jnp.ndarray | None = None,
               train: bool = False, pool: jnp.ndarray | None = None) -> jnp.ndarray:
    """[n, L, d] -> [n, L, d]; with `pool` ([n] positions) only those rows are computed after
    the keys and values: [n, 1, d] (the same numbers as the full block at those rows)."""
    width = x.shape[-1]
    y = nn.LayerNorm(self.ln_eps, dtype=self.dtype, name='ln_1')(x)
    queries = None
    if pool is not None:
      take = lambda t: jnp.take_along_axis(t, pool[:, None, None], axis=1)
      x, queries = take(x), take(y)
      if mask is not None:
        mask = jnp.take_along_axis(mask, pool[:, None, None, None], axis=2)
    x = x + SelfAttention(self.num_heads, dtype=self.dtype, name='attn')(y, mask, train, queries)
    y = nn.LayerNorm(self.ln_eps, dtype=self.dtype, name='ln_2')(x)
    y = ACTIVATIONS[self.act](nn.Dense(4 * width, dtype=self.dtype, name='fc1')(y))
    return x + nn.Dense(width, dtype=self.dtype, name='fc2')(y)


class Transformer(nn.Module):
  """A stack of `depth` residual blocks (optionally rematerialised per block)."""
  depth: int
  num_heads: int
  dtype: Dtype = jnp.float32
  remat: bool = False
  act: str = 'quick_gelu'
  ln_eps: float = 1e-5  # PyTorch LayerNorm default, as CLIP and OpenCLIP

  @nn.compact
  def __call__(self, x, mask=None, train: bool = False, pool=None):
    """With `pool` ([n] positions) the last block computes only those rows: [n, 1, d]."""
    if self.act not in ACTIVATIONS:
      raise ValueError(f'CLIP tower act must be one of {list(ACTIVATIONS)}, got {self.act!r}')
    block = nn.remat(ResidualBlock, static_argnums=(3,)) if self.remat else ResidualBlock
    for i in range(self.depth):
      last = pool if i == self.depth - 1 else None
      x = block(self.num_heads, self.dtype, self.act, self.ln_eps, name=f'block{i}')(
          x, mask, train, last)
    return x


def _project(x: jnp.ndarray, output_dim: int, dtype: Dtype) -> jnp.ndarray:
  if not output_dim:
    return x
  init = nn.initializers.normal(x.shape[-1] ** -0.5)
  return nn.Dense(output_dim, use_bias=False, dtype=dtype, kernel_init=init, name='proj')(x)


class ClipViT(nn.Module):
  """CLIP ViT: bias-free patch conv, class token, positions, ln_pre, blocks, ln_post on the
  class token, projection. Defaults are ViT-B/32; patch=16 gives ViT-B/16."""
  patch: int = 32
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  output_dim: int = 512
  dtype: Dtype = jnp.float32
  remat: bool = False
  act: str = 'quick_gelu'
  ln_eps: float = 1e-5  # PyTorch LayerNorm default, as CLIP and OpenCLIP
  # The last block computes only the pooled token (same output, about 1/depth less work).
  pool_last_block: bool = True
  patch_dropout: float = 0.0  # fraction of patch tokens dropped in training (FLIP)

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = nn.Conv(self.width, (self.patch, self.patch), strides=(self.patch, self.patch),
                padding='VALID', use_bias=False, dtype=self.dtype,
                name='patch_embed')(images.astype(self.dtype))
    n, h, w, c = x.shape
    scale = c ** -0.5
    cls = self.param('cls', nn.initializers.normal(scale), (c,))
    pos = self.param('pos_embed', nn.initializers.normal(scale), (h * w + 1, c))
    x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (n, 1, c)),
                         x.reshape(n, h * w, c)], axis=1)
    x = x + pos.astype(x.dtype)
    if train and self.patch_dropout > 0:  # FLIP / OpenCLIP: after the positions, before ln_pre
      x = vit.drop_patches(x, self.patch_dropout, self.make_rng('dropout'))
    x = nn.LayerNorm(self.ln_eps, dtype=self.dtype, name='ln_pre')(x)
    pool = jnp.zeros((n,), jnp.int32) if self.pool_last_block else None  # the class token
    x = Transformer(self.depth, self.num_heads, self.dtype, self.remat, self.act, self.ln_eps,
                    name='transformer')(x, None, train, pool)
    x = nn.LayerNorm(self.ln_eps, dtype=self.dtype, name='ln_post')(x[:, 0])
    return _project(x, self.output_dim, self.dtype)


POOLS = ('last', 'eot')


class ClipText(nn.Module):
  """CLIP text transformer: token + position embeddings, causal blocks, ln_final, features at
  the end-of-text token, projection. Defaults are CLIP's (49,408 vocab, 77 tokens, 512 wide).

  `pool` says where the end-of-text token is: 'last' (default), the last token that is not
  `pad_id` (where a WordPiece tokenizer puts [SEP], whatever its id); 'eot', the highest id of
  the row, open_clip's rule for CLIP's BPE, whose end-of-text id is the largest and whose id 0
  ('!') is a real token, so 'last' would stop early at a trailing '!'. With a causal mask it
  is the one position that has seen the whole text.
  """
  vocab_size: int = 49408
  max_len: int = 77
  width: int = 512
  depth: int = 12
  num_heads: int = 8
  output_dim: int = 512
  pad_id: int = 0
  # The end token's id when padding cannot be told from text by id (CLIP's BPE pads with '!').
  eos_id: int | None = None
  dtype: Dtype = jnp.float32
  remat: bool = False
  act: str = 'quick_gelu'
  ln_eps: float = 1e-5  # PyTorch LayerNorm default, as CLIP and OpenCLIP
  pool: str = 'last'  # one of POOLS
  # The last block computes only the end-of-text token (same output, less work).
  pool_last_block: bool = True

  @nn.compact
  def __call__(self, tokens: jnp.ndarray, train: bool = False,
               return_tokens: bool = False) -> jnp.ndarray | tuple[jnp.ndarray, jnp.ndarray]:
    """Projected end-of-text features [n, output_dim]; with `return_tokens` also every
    position's ln_final output [n, L, width] (the last block then runs on every position)."""
    n, length = tokens.shape
    if length > self.max_len:
      raise ValueError(f'text length {length} exceeds model.text.max_len={self.max_len}')
    x = nn.Embed(self.vocab_size, self.width, embedding_init=nn.initializers.normal(0.02),
                 name='token_embed')(tokens)
    pos = self.param('pos_embed', nn.initializers.normal(0.01), (self.max_len, self.width))
    x = (x + pos[:length]).astype(self.dtype)
    mask = nn.make_causal_mask(tokens)
    if self.pool == 'eot':
      eot = jnp.argmax(tokens, axis=1)
    elif self.pool == 'last':
      eot = jnp.maximum(
          jnp.sum(attention.text_positions(tokens, self.pad_id, self.eos_id), axis=1) - 1, 0)
    else:
      raise ValueError(f'model.text.pool must be one of {POOLS}, got {self.pool!r}')
    pool = eot if self.pool_last_block and not return_tokens else None
    x = Transformer(self.depth, self.num_heads, self.dtype, self.remat, self.act, self.ln_eps,
                    name='transformer')(x, mask, train, pool)
    ln_final = nn.LayerNorm(self.ln_eps, dtype=self.dtype, name='ln_final')
    if return_tokens:
      seq = ln_final(x)
      pooled = jnp.take_along_axis(seq, eot[:, None, None], axis=1)[:, 0]
      return _project(pooled, self.output_dim, self.dtype), seq
    if pool is None:
      x = jnp.take_along_axis(x, eot[:, None, None], axis=1)
    return _project(ln_final(x[:, 0]), self.output_dim, self.dtype)
