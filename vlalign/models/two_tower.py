"""Two-tower model composed from tower names in the config."""

import dataclasses
import math
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from vlalign.models.bert import Bert
from vlalign.models.clip import ClipText, ClipViT
from vlalign.models.efficientnet import EfficientNet
from vlalign.models.resnet_clip import ModifiedResNet
from vlalign.models.text_transformer import TextTransformer
from vlalign.models.vit import ViT

# Explicit name -> tower class tables (no import-time registration).
IMAGE_TOWERS: Mapping[str, Callable[..., nn.Module]] = {
    'vit': ViT, 'efficientnet': EfficientNet, 'clip_vit': ClipViT, 'clip_resnet': ModifiedResNet}
TEXT_TOWERS: Mapping[str, Callable[..., nn.Module]] = {
    'transformer': TextTransformer, 'bert': Bert, 'clip_text': ClipText}
# How a tower's features reach the embedding: a Linear without / with bias, or as they are
# (ALIGN's image tower and CLIP towers, which end in their own projection).
PROJECTIONS = ('linear', 'linear_bias', 'none')

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def l2_normalize(x: jnp.ndarray, eps: float = 1e-6) -> jnp.ndarray:
  """Unit-L2 rows, computed in float32."""
  x = x.astype(jnp.float32)
  return x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


class TwoTower(nn.Module):
  """Image tower + text tower -> linear projections -> L2-normalised embeddings, log-scale."""
  image_tower: nn.Module
  text_tower: nn.Module
  embed_dim: int
  temperature_init: float = 1.0
  learn_temperature: bool = True
  image_projection: str = 'linear'  # one of PROJECTIONS
  text_projection: str = 'linear'
  bias_init: float | None = None  # a learnable logit bias (SigLIP) when not None

  def setup(self):
    self.image_proj = _projection(self.image_projection, self.embed_dim, 'image')
    self.text_proj = _projection(self.text_projection, self.embed_dim, 'text')
    init = math.log(1.0 / self.temperature_init)
    self.log_scale = self.param('log_scale', nn.initializers.constant(init), ())
    if self.bias_init is not None:
      self.logit_bias = self.param('logit_bias', nn.initializers.constant(self.bias_init), ())

  def encode_image(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """Normalised image embeddings [n, embed_dim] (float32)."""
    return l2_normalize(self.project_image(images, train))

  def project_image(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """Image embeddings before L2 normalisation [n, embed_dim]."""
    return self.image_proj(self.image_tower(images, train=train))

  def encode_text_and_tokens(self, tokens: jnp.ndarray,
                             train: bool = False) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(normalised text embeddings [n, embed_dim], the text tower's per-position outputs
    [n, L, width]) from one pass of the text tower."""
    pooled, seq = self.text_tower(tokens, train=train, return_tokens=True)
    return l2_normalize(self.text_proj(pooled)), seq

  def encode_text(self, tokens: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """Normalised text embeddings [n, embed_dim] (float32)."""
    return l2_normalize(self.project_text(tokens, train))

  def project_text(self, tokens: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """Text embeddings before L2 normalisation [n, embed_dim]."""
    return self.text_proj(self.text_tower(tokens, train=train))

  def embed_parts(self, images, tokens, train: bool = False) -> dict[str, jnp.ndarray]:
    """Like __call__ but with the text embeddings before normalisation ('text_projected'), for
    objectives that act between projection and normalisation (ZeroVL's text mixup)."""
    out = {'image': self.encode_image(images, train),
           'text_projected': self.project_text(tokens, train), 'scale': self.logit_scale()}
    if self.bias_init is not None:
      out['bias'] = self.logit_bias.astype(jnp.float32)
    return out

  def logit_scale(self) -> jnp.ndarray:
    """s = 1 / temperature (float32); constant when the temperature is not learned."""
    if self.learn_temperature:
      return jnp.exp(self.log_scale.astype(jnp.float32))
    return jnp.float32(1.0 / self.temperature_init)

  def __call__(self, images, tokens, train: bool = False) -> dict[str, jnp.ndarray]:
    out = {'image': self.encode_image(images, train), 'text': self.encode_text(tokens, train),
           'scale': self.logit_scale()}
    if self.bias_init is not None:
      out['bias'] = self.logit_bias.astype(jnp.float32)
    return out


def _projection(kind: str, embed_dim: int, tower: str) -> Callable[[jnp.ndarray], jnp.ndarray]:
  if kind == 'none':
    def check(x):
      if x.shape[-1] != embed_dim:
        raise ValueError(f'config.model.{tower}_projection="none" needs the {tower} tower to '
                         f'output model.embed_dim={embed_dim} features, got {x.shape[-1]}')
      return x
    return check
  if kind not in ('linear', 'linear_bias'):
    raise ValueError(f'config.model.{tower}_projection must be one of {PROJECTIONS}, got {kind!r}')
  return nn.Dense(embed_dim, use_bias=kind == 'linear_bias', name=f'{tower}_proj')


# Tower config fields that are not constructor arguments (read by train.py and optim.py).
NON_TOWER_FIELDS = ('init_from', 'trainable', 'init_first_layers')


# Constructor fields a tower config may not set: build_model passes them.
_PASSED_FIELDS = ('parent', 'dtype', 'remat', 'vocab_size', 'max_len')


def tower_fields(name: str) -> frozenset[str]:
  """The keys a `config.model.image` / `.text` sub-config of tower `name` may hold."""
  cls = {**IMAGE_TOWERS, **TEXT_TOWERS}[name]
  fields = {f.name for f in dataclasses.fields(cls)} - set(_PASSED_FIELDS)
  return frozenset(fields | set(NON_TOWER_FIELDS) | {'name'})


def _tower_kwargs(tower_cfg: ml_collections.ConfigDict) -> dict:
  return {k: v for k, v in dict(tower_cfg).items() if k not in NON_TOWER_FIELDS}


def build_model(model_cfg: ml_collections.ConfigDict, vocab_size: int, max_len: int,
                pad_id: int = 0, eos_id: int | None = None) -> TwoTower:
  """Builds the two-tower model named by `config.model` (tower names checked by config_lib);
  `vocab_size` is the tokenizer's (model.vocab_size, when set, must hold it); `pad_id` and
  `eos_id` say where a row's text ends (tokenizers.model_token_ids)."""
  dtype = DTYPES[model_cfg.compute_dtype]
  if model_cfg.vocab_size:
    if vocab_size > model_cfg.vocab_size:
      raise ValueError(f'the tokenizer has {vocab_size} tokens but config.model.vocab_size is '
                       f'{model_cfg.vocab_size}')
    vocab_size = model_cfg.vocab_size
  img_kwargs, txt_kwargs = _tower_kwargs(model_cfg.image), _tower_kwargs(model_cfg.text)
  img_name, txt_name = img_kwargs.pop('name'), txt_kwargs.pop('name')
  txt_kwargs.setdefault('pad_id', pad_id)  # an imported tower's own pad id (model.text) wins
  txt_kwargs.setdefault('eos_id', eos_id)
  image = IMAGE_TOWERS[img_name](dtype=dtype, remat=model_cfg.remat, **img_kwargs)
  text = TEXT_TOWERS[txt_name](vocab_size=vocab_size, max_len=max_len, dtype=dtype,
                               remat=model_cfg.remat, **txt_kwargs)
  return TwoTower(image, text, model_cfg.embed_dim, model_cfg.temperature_init,
                  model_cfg.learn_temperature, model_cfg.image_projection,
                  model_cfg.text_projection, model_cfg.get('bias_init'))
