"""ViCHA (Shukor et al., BMVC 2022; docs/METHODS.md section 5): the two-tower parts.

Losses (each logged as train/loss/<name>; total = itc + hier_weight * sum(hier levels) +
mim_weight * mim):

  itc   ALBEF-style contrastive loss with momentum encoders, queues and momentum distillation.
        Momentum encoders are an EMA (method.vicha.momentum) of the towers, their projections and
        the concept encoder (extra['ema']); queues (methods/bank.py, global, sharded) hold momentum
        features. For image query q_i the columns are the momentum text features of the global
        batch followed by the text queue; targets are alpha * softmax(s * q^m_i . columns) +
        (1 - alpha) * one-hot(the pair's own momentum text feature), the loss the
        cross-entropy of softmax(s * q_i . columns) against them; text -> image likewise;
        itc = (i2t + t2i) / 2. alpha = method.vicha.alpha * min(1, updates / distill_ramp_steps)
        (updates: applied steps so far, extra['updates']). s is the model's learnable logit
        scale; ALBEF clamps its temperature parameter to [0.001, 0.5] before each forward
        (gradient kept), here the log-scale is kept in optimizer.log_scale_range
        ([ln 2, ln 1000], projected after every update) and max_logit_scale (1000) is a
        gradient-keeping cap (no gradient through the targets). After the loss the
        batch's momentum features are enqueued (global batch order), oldest out.
  hier  hierarchical alignment: for each (ViT block v, text layer t) in method.vicha.levels
        (1-based), the [CLS] outputs (through the tower's final LayerNorm; BERT's post-LN layers are
        normalised already) go through their own Linear projections to embed_dim, are
        normalised and aligned with the symmetric in-batch softmax loss (losses/contrastive.py:
        local rows x gathered columns, positive of row i on device r at r * b + i) with the
        shared scale; logged per level as loss/hier/<v>_<t> and summed as loss/hier. The
        gathered columns carry no gradient (method.hier_column_grad='none', as ViCHA's
        torch.no_grad concat_all_gather: only the rows are trained by this loss).
  mim   MAE on the image tower: per example mask_ratio of the patch tokens hidden (a random
        permutation from the step key), the ViT encodes [CLS] + the visible ones (no concept
        tokens), a decoder (Linear to decoder.width, mask tokens, positions, decoder.depth
        pre-LN blocks, Linear to patch * patch * 3; fixed 2-D sin-cos positions as MAE's,
        decoder.pos_embed) predicts every patch; the loss is the MSE
        against per-patch normalised pixels (mean / unbiased variance over the patch, eps 1e-6, as
        MAE's and ViCHA's torch .var()) over the
        masked patches only. A "patch" is the stride-`patch` square of the input image that
        the token at that grid position stands for: for stem='patch' exactly the token's
        input; for stem='conv' (the demo) the masking acts on the tokens after the conv stem,
        whose receptive fields reach a few pixels into neighbouring patches (a small leak the
        pixel-level MAE would not have).

Visual concepts (method.vicha.use_concepts): the data pipeline samples concepts_sample of the
example's stored top concepts (data/concepts.py) into batch['concept_tokens']; a small text
encoder (concepts_encoder: a TextTransformer) + Linear to the ViT width turns them into tokens
appended after the ViT's position embedding (padding masked out of attention), in the query
and momentum passes.

Heads (hier projections, MAE decoder, concept encoder) are parameters under params['vicha'].
"""

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vlalign import config_lib
from vlalign.losses import contrastive, sharded
from vlalign.methods import bank, base, ema, logit_scale
from vlalign.models.text_transformer import TextTransformer
from vlalign.models.two_tower import l2_normalize
from vlalign.models.vit import EncoderBlock

HEADS = 'vicha'  # params[HEADS] holds the method's heads


class LevelProjections(nn.Module):
  """One Linear (with bias) per level and tower, to embed_dim."""
  num_levels: int
  embed_dim: int

  @nn.compact
  def __call__(self, image: jnp.ndarray, text: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """image [n, levels, w_i], text [n, levels, w_t] -> two [n, levels, embed_dim]."""
    img = [nn.Dense(self.embed_dim, name=f'image{i}')(image[:, i]) for i in range(self.num_levels)]
    txt = [nn.Dense(self.embed_dim, name=f'text{i}')(text[:, i]) for i in range(self.num_levels)]
    return jnp.stack(img, axis=1), jnp.stack(txt, axis=1)


def sincos_2d(grid: int, width: int) -> np.ndarray:
  """[1 + grid * grid, width] fixed positions as MAE's: the first half of the channels encodes
  a token's column, the second half its row (each half: sin then cos of the coordinate times
  10000^(-k / (width / 4)), k < width / 4); row 0 ([CLS]) is zeros."""
  quarter = width // 4
  freqs = 1.0 / 10000 ** (np.arange(quarter, dtype=np.float64) / quarter)
  rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing='ij')
  one = lambda pos: np.concatenate([np.sin(np.outer(pos, freqs)), np.cos(np.outer(pos, freqs))],
                                   axis=1)
  table = np.concatenate([one(cols.reshape(-1)), one(rows.reshape(-1))], axis=1)
  return np.concatenate([np.zeros((1, width)), table]).astype(np.float32)


class MaeDecoder(nn.Module):
  """MAE decoder: encoder tokens ([CLS] + visible) -> pixel predictions of every patch."""
  num_patches: int
  patch_dim: int
  width: int
  depth: int
  num_heads: int
  pos_embed: str = 'sincos'  # MAE / ViCHA: fixed 2-D sin-cos; 'learned': a parameter

  @nn.compact
  def __call__(self, tokens: jnp.ndarray, keep: jnp.ndarray) -> jnp.ndarray:
    """tokens [n, 1 + k, w], keep [n, k] patch indices -> [n, num_patches, patch_dim]."""
    n = tokens.shape[0]
    x = nn.Dense(self.width, name='embed')(tokens)
    mask_token = self.param('mask_token', nn.initializers.normal(0.02), (1, 1, self.width))
    full = jnp.tile(mask_token, (n, self.num_patches, 1)).astype(x.dtype)
    full = full.at[jnp.arange(n)[:, None], keep].set(x[:, 1:])
    if self.pos_embed == 'sincos':
      pos = jnp.asarray(sincos_2d(math.isqrt(self.num_patches), self.width))[None]
    else:
      pos = self.param('pos_embed', nn.initializers.normal(0.02),
                       (1, self.num_patches + 1, self.width))
    x = jnp.concatenate([x[:, :1], full], axis=1) + pos.astype(x.dtype)
    for i in range(self.depth):
      x = EncoderBlock(self.num_heads, 4 * self.width, name=f'block{i}')(x)
    x = nn.LayerNorm(name='ln')(x)
    return nn.Dense(self.patch_dim, name='pred')(x[:, 1:])


class ConceptEncoder(nn.Module):
  """Concept tokens [n, L] -> ([n, L, out_width] tokens for the ViT, [n, L] valid)."""
  vocab_size: int
  max_len: int
  width: int
  depth: int
  num_heads: int
  out_width: int

  @nn.compact
  def __call__(self, tokens: jnp.ndarray, train: bool = False):
    _, seq = TextTransformer(self.vocab_size, self.max_len, self.width, self.depth,
                             self.num_heads, name='encoder')(tokens, train=train,
                                                             return_tokens=True)
    return nn.Dense(self.out_width, name='proj')(seq), tokens != 0


def _heads(config, model, num_patches: int) -> dict[str, nn.Module]:
  me, vit = config.method.vicha, model.image_tower
  heads = {'hier': LevelProjections(len(me.levels), config.model.embed_dim),
           'mim': MaeDecoder(num_patches, vit.patch * vit.patch * 3, me.decoder.width,
                             me.decoder.depth, me.decoder.num_heads, me.decoder.pos_embed)}
  if me.use_concepts:
    c = me.concepts_encoder
    heads['concepts'] = ConceptEncoder(model.text_tower.vocab_size, me.concepts_len, c.width,
                                       c.depth, c.num_heads, vit.width)
  return heads


def _num_patches(config, model) -> int:
  return (config.data.image_size // model.image_tower.patch) ** 2


def _image(module, images, train=False, keep=None, extra_tokens=None, extra_valid=None):
  pooled, aux = module.image_tower(images, train=train, keep=keep, extra_tokens=extra_tokens,
                                   extra_valid=extra_valid, return_levels=True)
  return l2_normalize(module.image_proj(pooled)), aux


def _text(module, tokens, train=False):
  pooled, levels = module.text_tower(tokens, train=train, return_levels=True)
  return l2_normalize(module.text_proj(pooled)), levels


def _online(params: dict, use_concepts: bool) -> dict:
  """The parameters the momentum encoders copy: towers, projections (and concept encoder)."""
  out = {'model': {k: v for k, v in params.items() if k != HEADS}}
  if use_concepts:
    out['concepts'] = params[HEADS]['concepts']
  return out


def num_visible(num_patches: int, mask_ratio: float) -> int:
  """Patches each image keeps visible (MAE: int(L * (1 - mask_ratio)))."""
  return int(num_patches * (1 - mask_ratio))


def init(config, model, params, model_state, key) -> tuple[Any, dict]:
  """Heads in params['vicha']; extra = momentum copies, the two queues, the update count."""
  me, d = config.method.vicha, config.data
  n_patch = _num_patches(config, model)
  heads = _heads(config, model, n_patch)
  images = jnp.zeros((2, d.image_size, d.image_size, 3), jnp.float32)
  tokens = jnp.zeros((2, d.max_len), jnp.int32)
  variables = lambda p: {'params': p, **model_state}
  img_aux = jax.eval_shape(lambda p: model.apply(variables(p), images, method=_image)[1], params)
  txt_levels = jax.eval_shape(lambda p: model.apply(variables(p), tokens, method=_text)[1], params)
  pick = lambda levels: jnp.zeros((2, len(me.levels), levels.shape[-1]), levels.dtype)
  k = jax.random.split(key, 5)
  visible = num_visible(n_patch, me.mask_ratio)
  new = {'hier': heads['hier'].init(k[0], pick(img_aux['levels']), pick(txt_levels))['params'],
         'mim': heads['mim'].init(k[1], jnp.zeros((2, 1 + visible, model.image_tower.width)),
                                  jnp.zeros((2, visible), jnp.int32))['params']}
  if me.use_concepts:
    new['concepts'] = heads['concepts'].init(
        k[2], jnp.zeros((2, me.concepts_len), jnp.int32))['params']
  params = {**logit_scale.clamp_params(params, config.optimizer.log_scale_range), HEADS: new}
  size, dim = me.queue_size, config.model.embed_dim
  extra = {'ema': {'params': jax.tree.map(jnp.copy, _online(params, me.use_concepts)),
                   'model_state': jax.tree.map(jnp.copy, model_state)},
           'queue_image': bank.init(k[3], size, dim), 'queue_text': bank.init(k[4], size, dim),
           'updates': jnp.zeros((), jnp.int32)}
  return params, extra


def defaults() -> ml_collections.ConfigDict:
  """config.method.vicha: momentum encoders (EMA factor) and queues (a multiple of the global
  batch), the logit scale's cap; hierarchical alignment of (ViT block, text layer) pairs,
  1-based (block k = the k-th block's output; the final layer is aligned by the main loss),
  weight per level, which columns carry gradient ('none': ViCHA's torch.no_grad gather,
  'local': this device's own, 'all': the exact gradient); momentum distillation weight alpha,
  ramped in linearly over distill_ramp_steps updates; the MAE branch (mask_ratio of the patches
  hidden, a decoder of `decoder` size with MAE's fixed 2-D sin-cos or learned positions, weight
  mim_weight); visual concepts (concepts_file from python -m vlalign.tools.concepts;
  concepts_sample drawn per example per step, tokenized to concepts_len, encoded by
  concepts_encoder + a Linear to the ViT width and appended to the ViT tokens)."""
  return ml_collections.ConfigDict({
      'momentum': 0.99, 'queue_size': 9600, 'max_logit_scale': 100.0,
      'levels': ((7, 1), (8, 2), (9, 3), (10, 4), (11, 5)), 'hier_weight': 0.1,
      'hier_column_grad': 'none', 'alpha': 0.4, 'distill_ramp_steps': 1000,
      'mim_weight': 1.0, 'mask_ratio': 0.75,
      'decoder': {'width': 768, 'depth': 2, 'num_heads': 16, 'pos_embed': 'sincos'},
      'use_concepts': True, 'concepts_file': '', 'concepts_sample': 4, 'concepts_len': 16,
      'concepts_encoder': {'width': 256, 'depth': 2, 'num_heads': 4},
  })


LOSS_FIELDS = ()  # ITC, hierarchical and MIM losses have their own settings, not config.loss'


def validate(config) -> None:
  """ViCHA's checks: a ViT and a per-layer text tower, levels within the towers, weights,
  a mask that leaves patches on both sides, head shapes, the concepts."""
  check, me, m = config_lib.check, config.method.vicha, config.model
  check(m.image.name == 'vit', 'model.image.name',
        f'method.name="vicha" needs the "vit" image tower (levels, MAE masking and concept '
        f'tokens act on its token sequence), got {m.image.name!r}')
  check(m.text.name in ('transformer', 'bert'), 'model.text.name',
        f'method.name="vicha" needs a "transformer" or "bert" text tower (per-layer [CLS]), '
        f'got {m.text.name!r}')
  check(0 <= me.momentum < 1, 'method.vicha.momentum', f'must be in [0, 1), got {me.momentum!r}')
  config_lib.check_queue(me.queue_size, 'method.vicha.queue_size', config.data.global_batch)
  check(me.max_logit_scale > 0, 'method.vicha.max_logit_scale', 'must be positive')
  depths = {'image': config_lib.tower_depth(m.image), 'text': config_lib.tower_depth(m.text)}
  for i, pair in enumerate(me.levels):
    field = f'method.vicha.levels[{i}]'
    check(len(pair) == 2, field, f'must be (vit_block, text_layer), got {pair!r}')
    for value, tower in zip(pair, ('image', 'text')):
      check(isinstance(value, int) and 1 <= value <= depths[tower], field,
            f'{tuple(pair)!r}: {tower} level {value!r} is not within [1, model.{tower} depth='
            f'{depths[tower]}] (levels are 1-based)')
  for name in ('hier_weight', 'mim_weight', 'alpha'):
    check(me[name] >= 0, f'method.vicha.{name}', f'must be >= 0, got {me[name]!r}')
  check(me.alpha <= 1, 'method.vicha.alpha', f'must be in [0, 1], got {me.alpha!r}')
  config_lib.check_int(me.distill_ramp_steps, 'method.vicha.distill_ramp_steps', 0)
  config_lib.check_choice(me.hier_column_grad, 'method.vicha.hier_column_grad',
                          ('all', 'local', 'none'))
  patches = (config.data.image_size // m.image.patch) ** 2
  visible = int(patches * (1 - me.mask_ratio))
  check(0 < me.mask_ratio < 1 and 1 <= visible < patches, 'method.vicha.mask_ratio',
        f'{me.mask_ratio!r} must leave at least one visible and one masked patch of the '
        f'{patches} per image')
  _validate_heads(config)


def _validate_heads(config) -> None:
  """The MAE decoder, the concept encoder and the concepts' file and sizes."""
  check, me = config_lib.check, config.method.vicha
  for part in ('decoder', 'concepts_encoder'):
    for name in ('width', 'depth', 'num_heads'):
      config_lib.check_int(me[part][name], f'method.vicha.{part}.{name}', 1)
    check(me[part].width % me[part].num_heads == 0, f'method.vicha.{part}.num_heads',
          f'{me[part].num_heads} does not divide method.vicha.{part}.width={me[part].width}')
  config_lib.check_choice(me.decoder.pos_embed, 'method.vicha.decoder.pos_embed',
                          ('sincos', 'learned'))
  check(me.decoder.pos_embed != 'sincos' or me.decoder.width % 4 == 0,
        'method.vicha.decoder.width',
        f'{me.decoder.width} must be a multiple of 4 for 2-D sin-cos positions')
  check(isinstance(me.use_concepts, bool), 'method.vicha.use_concepts', 'must be True or False')
  if me.use_concepts:
    check(bool(me.concepts_file), 'method.vicha.concepts_file',
          'is empty; build it with python -m vlalign.tools.concepts --config=<teacher config> '
          '--workdir=<teacher workdir> --output=<file> (or set method.vicha.use_concepts=False)')
    config_lib.check_int(me.concepts_sample, 'method.vicha.concepts_sample', 1)
    check(_is_int(me.concepts_len) and 3 <= me.concepts_len <= config.data.max_len,
          'method.vicha.concepts_len',
          f'{me.concepts_len!r} must be within [3, data.max_len={config.data.max_len}]')


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def data_needs(config) -> base.DataNeeds:
  """The visual concepts (file, draws per example, token length) when use_concepts."""
  me = config.method.vicha
  if not me.use_concepts:
    return base.DataNeeds()
  return base.DataNeeds(concepts=(me.concepts_file, me.concepts_sample, me.concepts_len))


def extra_shardings(config, state_shardings, mesh: Mesh) -> dict:
  """Momentum parameters placed like the parameters; queues split over the batch axes."""
  queue = bank.shardings(mesh, config.batch_axes)
  return {'ema': {'params': _online(state_shardings.params, config.method.vicha.use_concepts),
                  'model_state': state_shardings.model_state},
          'queue_image': queue, 'queue_text': dict(queue),
          'updates': NamedSharding(mesh, P())}


def patchify(images: jnp.ndarray, patch: int) -> jnp.ndarray:
  """[n, H, W, C] -> [n, (H/p) * (W/p), p * p * C], patches in the ViT's token order."""
  n, h, w, c = images.shape
  x = images.reshape(n, h // patch, patch, w // patch, patch, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, (h // patch) * (w // patch), patch * patch * c)


def mim_loss(pred: jnp.ndarray, images: jnp.ndarray, keep: jnp.ndarray, patch: int,
             eps: float = 1e-6) -> jnp.ndarray:
  """MSE of pred [n, P, p*p*C] against per-patch normalised pixels, over the patches not in
  keep [n, k] (the masked ones), averaged over pixels and masked patches."""
  target = patchify(images.astype(jnp.float32), patch)
  mean = target.mean(axis=-1, keepdims=True)
  var = target.var(axis=-1, keepdims=True, ddof=1)  # unbiased, as MAE's torch .var()
  target = (target - mean) / jnp.sqrt(var + eps)
  n, num = target.shape[:2]
  masked = jnp.ones((n, num), jnp.float32).at[jnp.arange(n)[:, None], keep].set(0.0)
  per_patch = jnp.mean(jnp.square(pred.astype(jnp.float32) - target), axis=-1)
  return jnp.sum(per_patch * masked) / jnp.sum(masked)


def random_keep(key: jax.Array, n: int, num_patches: int, visible: int) -> jnp.ndarray:
  """[n, visible] sorted indices of the patches each example keeps (uniform, per example)."""
  noise = jax.random.uniform(key, (n, num_patches))
  return jnp.sort(jnp.argsort(noise, axis=1)[:, :visible], axis=1)


def hier_losses(image_levels: jnp.ndarray, text_levels: jnp.ndarray, scale: jnp.ndarray,
                mesh: Mesh, batch_axes: Sequence[str] = ('data',),
                column_grad: str = 'none') -> list[jnp.ndarray]:
  """Per level: the symmetric in-batch softmax loss (mean of the two directions) of the
  normalised level embeddings [B, levels, d] (sharded on batch_axes); gradient through the
  columns as `column_grad` (ViCHA's: 'none', its gather is torch.no_grad)."""
  return [contrastive.softmax_contrastive(
      l2_normalize(image_levels[:, i]), l2_normalize(text_levels[:, i]), scale, mesh,
      batch_axes=batch_axes, reduction='mean', column_grad=column_grad)['loss']
      for i in range(image_levels.shape[1])]


def _distill_body(q, qm, k, queue, scale, alpha, *, axis_name):
  """Per device: local queries q (student) and qm (momentum) [b, d], local momentum keys k
  [b, d] (gathered: the batch columns), this device's queue rows [K/D, d]."""
  b, axis = q.shape[0], axis_name
  me = jax.lax.axis_index(axis)
  sg = jax.lax.stop_gradient(scale)
  k_all = jax.lax.all_gather(k, axis, tiled=True)  # [B, d]
  s_b, t_b = scale * q @ k_all.T, sg * qm @ k_all.T  # [b, B]
  q_all = jax.lax.all_gather(q, axis, tiled=True)  # [B, d]: the queries go to the queue rows
  qm_all = jax.lax.all_gather(qm, axis, tiled=True)
  s_q, t_q = scale * q_all @ queue.T, sg * qm_all @ queue.T  # [B, K/D]
  sh_s = jax.lax.stop_gradient(jax.lax.pmax(jax.lax.stop_gradient(s_q).max(axis=1), axis))
  sh_t = jax.lax.pmax(t_q.max(axis=1), axis)
  w_q = jnp.exp(t_q - sh_t[:, None])
  sums = jax.lax.psum(jnp.stack([jnp.exp(s_q - sh_s[:, None]).sum(1), w_q.sum(1),
                                 (w_q * s_q).sum(1)]), axis)  # [3, B]
  mine = lambda v: jax.lax.dynamic_slice_in_dim(v, me * b, b, axis=-1)
  sh_s, sh_t, sums = mine(sh_s), mine(sh_t), mine(sums)
  top_s = jax.lax.stop_gradient(jnp.maximum(sh_s, s_b.max(axis=1)))
  lse = top_s + jnp.log(jnp.exp(sh_s - top_s) * sums[0] +
                        jnp.exp(s_b - top_s[:, None]).sum(axis=1))
  top_t = jnp.maximum(sh_t, t_b.max(axis=1))
  w_tail, w_b = jnp.exp(sh_t - top_t), jnp.exp(t_b - top_t[:, None])
  expected = (w_tail * sums[2] + (w_b * s_b).sum(1)) / (w_tail * sums[1] + w_b.sum(1))
  pos = jnp.take_along_axis(s_b, (me * b + jnp.arange(b))[:, None], axis=1)[:, 0]
  rows = lse - alpha * expected - (1.0 - alpha) * pos
  return jax.lax.psum(rows.sum(), axis) / (b * jax.lax.psum(1, axis))


def distill_loss(q: jnp.ndarray, q_m: jnp.ndarray, k_m: jnp.ndarray, queue: jnp.ndarray,
                 scale: jnp.ndarray, alpha: jnp.ndarray, mesh: Mesh,
                 batch_axes: Sequence[str] = ('data',)) -> jnp.ndarray:
  """One direction of ALBEF's ITC with momentum distillation: queries q [B, d] (unit rows)
  against the columns [k_m; queue] (momentum keys of the batch, then the queue [K, d]), targets
  alpha * softmax(scale * q_m . columns) + (1 - alpha) * one-hot(row's own key); mean over the
  batch. q, q_m, k_m sharded on batch_axes, the queue too (never gathered); no gradient into
  q_m, k_m, the queue or the targets."""
  batch, rep = sharded.BATCH, sharded.REPLICATED
  sg = jax.lax.stop_gradient
  return sharded.run(_distill_body, mesh, batch_axes,
                     (q, sg(q_m), sg(k_m), sg(queue), scale, sg(jnp.asarray(alpha, jnp.float32))),
                     (batch, batch, batch, batch, rep, rep))


def distill_alpha(alpha: float, ramp_steps: int, updates: jnp.ndarray) -> jnp.ndarray:
  """alpha * min(1, updates / ramp_steps) (alpha itself when ramp_steps is 0)."""
  if not ramp_steps:
    return jnp.float32(alpha)
  return alpha * jnp.minimum(1.0, updates.astype(jnp.float32) / ramp_steps)


def make_objective(config, model, mesh: Mesh):
  """The train step's loss function for ViCHA (see the module docstring)."""
  me, axes = config.method.vicha, config.batch_axes
  n_patch = _num_patches(config, model)
  visible = num_visible(n_patch, me.mask_ratio)
  heads = _heads(config, model, n_patch)
  img_idx = jnp.asarray([v - 1 for v, _ in me.levels], jnp.int32)
  txt_idx = jnp.asarray([t - 1 for _, t in me.levels], jnp.int32)
  level_names = [f'{v}_{t}' for v, t in me.levels]

  def objective(params, model_state, extra, batch, rng):
    state = {'ms': model_state, 'ema_ms': extra['ema']['model_state']}

    def run(p, ms_key, method, i, *args, **kwargs):  # one tower pass, threading model state
      out, state[ms_key] = model.apply({'params': p, **state[ms_key]}, *args, train=True,
                                       rngs={'dropout': jax.random.fold_in(rng, i)},
                                       mutable=list(state[ms_key]), method=method, **kwargs)
      return out

    def concepts(p, i):
      if not me.use_concepts:
        return {}
      tok, valid = heads['concepts'].apply({'params': p}, batch['concept_tokens'], train=True,
                                           rngs={'dropout': jax.random.fold_in(rng, i)})
      return {'extra_tokens': tok, 'extra_valid': valid}

    h = params[HEADS]
    model_params = {k: v for k, v in params.items() if k != HEADS}
    scale = logit_scale.capped(model.apply({'params': params}, method='logit_scale'),
                               me.max_logit_scale)
    img, img_aux = run(model_params, 'ms', _image, 0, batch['image'],
                       **concepts(h.get('concepts'), 10))
    txt, txt_levels = run(model_params, 'ms', _text, 1, batch['tokens'])
    # Momentum encoders: EMA first (MoCo / ALBEF order), then the keys, no gradient.
    momentum = ema.update(extra['ema']['params'], _online(params, me.use_concepts), me.momentum)
    img_m, _ = run(momentum['model'], 'ema_ms', _image, 2, batch['image'],
                   **concepts(momentum.get('concepts'), 12))
    txt_m, _ = run(momentum['model'], 'ema_ms', _text, 3, batch['tokens'])
    img_m, txt_m = jax.lax.stop_gradient(img_m), jax.lax.stop_gradient(txt_m)
    alpha = distill_alpha(me.alpha, me.distill_ramp_steps, extra['updates'])
    i2t = distill_loss(img, img_m, txt_m, extra['queue_text']['entries'], scale, alpha, mesh,
                       axes)
    t2i = distill_loss(txt, txt_m, img_m, extra['queue_image']['entries'], scale, alpha, mesh,
                       axes)
    itc = 0.5 * (i2t + t2i)
    img_lv, txt_lv = heads['hier'].apply({'params': h['hier']}, img_aux['levels'][:, img_idx],
                                         txt_levels[:, txt_idx])
    hier = hier_losses(img_lv, txt_lv, scale, mesh, axes, me.hier_column_grad)
    keep = random_keep(jax.random.fold_in(rng, 4), batch['image'].shape[0], n_patch, visible)
    _, masked_aux = run(model_params, 'ms', _image, 5, batch['image'], keep=keep)
    pred = heads['mim'].apply({'params': h['mim']}, masked_aux['tokens'], keep)
    mim = mim_loss(pred, batch['image'], keep, model.image_tower.patch)
    hier_total = sum(hier)
    total = itc + me.hier_weight * hier_total + me.mim_weight * mim
    new_extra = {'ema': {'params': momentum, 'model_state': state['ema_ms']},
                 'queue_image': bank.enqueue(extra['queue_image'], img_m, mesh, axes),
                 'queue_text': bank.enqueue(extra['queue_text'], txt_m, mesh, axes),
                 'updates': extra['updates'] + 1}
    losses = {'loss': total, 'loss/itc': itc, 'loss/i2t': i2t, 'loss/t2i': t2i,
              'loss/hier': hier_total, 'loss/mim': mim, 'distill_alpha': alpha,
              **{f'loss/hier/{name}': v for name, v in zip(level_names, hier)}}
    return total, (losses, {'scale': scale}, state['ms'], new_extra)

  return objective
