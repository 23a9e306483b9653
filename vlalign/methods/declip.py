"""DeCLIP (Li et al., ICLR 2022; docs/METHODS.md section 3): supervision from every pair.

Views (data/views.py, asked for through config.data.views): images I1 ('image', the plain train
view) and I2 ('image2', a stronger augmentation); texts T ('tokens_mlm', the MLM-masked caption)
and T' ('tokens_eda', an EDA-augmented caption). The text tower runs once on T for both its
pooled embedding and its token outputs. Losses (each logged as train/loss/<name>):

  mvs  multi-view supervision: the mean of the symmetric contrastive loss (config.loss) over the
       4 pairs (I1,T), (I2,T), (I1,T'), (I2,T'); train/loss/i2t and t2i average its directions.
  iss  image SimSiam: projector (3 Linear+BN layers, BN affine, ReLU between, projector_dim) and
       predictor (projector_dim -> predictor_dim -> projector_dim) on the image embeddings before
       normalisation; -1/2 [cos(p1, sg(z2)) + cos(p2, sg(z1))], mean over the batch.
  tss  text self-supervision: MLM cross-entropy, Linear(width -> vocab) on the text tower's token
       outputs of T, mean over the masked positions of the global batch.
  nns  nearest-neighbour supervision: for each text of T and T' its top-1 neighbour in the text
       bank as it was BEFORE this step's insertions is the positive of an image->text
       contrastive loss (columns: the neighbours of the global batch):
       1/2 sum_v 1/2 [CE(I_v vs NN(T)) + CE(I_v vs NN(T'))]. Then T and T' are enqueued.

Total: sum of method.declip.weights[name] * loss (0.4 / 0.2 / 0.2 / 0.2 by default). The logit
scale is the model's exp(log_scale) with its value capped at method.declip.max_logit_scale (100) and
the gradient of the uncapped exp (methods/logit_scale.capped, as DeCLIP's in-place clamp); the
parameter itself stays in config.optimizer.log_scale_range ([3, 6] in the recipes: clamped at
init here, projected after every update by the optimizer), as DeCLIP's runner clamps it before
and after every step.

The bank (methods/bank.py) is GLOBAL and sharded: one FIFO of bank_size normalised text
embeddings of the whole global batch, rows split over the batch axes; DeCLIP's own code keeps one
bank of 65,536 per GPU (its paper config: 256 steps of history); the paper config sizes the
global bank at 65,536 x the GPU count for the same history and rows per device. A global bank
gives the same neighbours for any device count (the 8-device step
equals the 1-device step) at the cost of a gather of the queries and an exchange of per-device
candidates per lookup (methods/bank.nearest).

The SimSiam heads' batch norm normalises with the statistics of the batch it is given (the global
batch under jit, so also the same for any device count) and keeps no running averages: the heads
only exist in training. Their parameters live in params['declip'] (trained and checkpointed with
the towers; evaluation ignores them).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from vlalign import config_lib
from vlalign.losses import api as losses_api
from vlalign.losses import contrastive
from vlalign.methods import bank, base
from vlalign.methods import logit_scale
from vlalign.models.two_tower import l2_normalize

HEADS = 'declip'  # params[HEADS] holds the method's heads
LOSSES = ('mvs', 'iss', 'tss', 'nns')
VIEWS = ('image2', 'text_mlm', 'text_eda')  # data.views it trains on


class BatchNorm(nn.Module):
  """Normalisation over the leading (batch) axis with that batch's statistics (no running
  averages), optional learnable scale and bias."""
  affine: bool = True
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = x.astype(jnp.float32)
    mean = x.mean(axis=0)
    var = jnp.square(x - mean).mean(axis=0)
    y = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
    if self.affine:
      y = y * self.param('scale', nn.initializers.ones, (x.shape[-1],))
      y = y + self.param('bias', nn.initializers.zeros, (x.shape[-1],))
    return y


class Projector(nn.Module):
  """SimSiam projector as DeCLIP's: (Linear, BN, ReLU) x 2, Linear, BN, all `dim` wide; every
  BN has a learnable scale and bias (DeCLIP's nn.BatchNorm1d defaults; SimSiam's own last BN
  has none)."""
  dim: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    for i in range(2):
      x = nn.relu(BatchNorm(name=f'bn{i}')(nn.Dense(self.dim, use_bias=False, name=f'fc{i}')(x)))
    return BatchNorm(name='bn2')(nn.Dense(self.dim, use_bias=False, name='fc2')(x))


class Predictor(nn.Module):
  """SimSiam predictor: Linear(hidden), BN, ReLU, Linear(out)."""
  hidden: int
  out: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = nn.relu(BatchNorm(name='bn0')(nn.Dense(self.hidden, use_bias=False, name='fc0')(x)))
    return nn.Dense(self.out, name='fc1')(x)


def _heads(config, vocab_size: int) -> dict[str, nn.Module]:
  me = config.method.declip
  return {'projector': Projector(me.projector_dim),
          'predictor': Predictor(me.predictor_dim, me.projector_dim),
          'mlm_head': nn.Dense(vocab_size)}


def init(config, model, params, model_state, key) -> tuple[Any, dict]:
  """Heads in params['declip']; extra = the text bank (random unit rows, pointer 0)."""
  me, dim = config.method.declip, config.model.embed_dim
  tokens = jnp.zeros((2, config.data.max_len), jnp.int32)
  seq = jax.eval_shape(lambda p: model.apply({'params': p, **model_state}, tokens,
                                             method='encode_text_and_tokens')[1], params)
  heads = _heads(config, model.text_tower.vocab_size)
  k = jax.random.split(key, 4)
  inputs = {'projector': jnp.zeros((2, dim)), 'predictor': jnp.zeros((2, me.projector_dim)),
            'mlm_head': jnp.zeros((2, seq.shape[-1]), seq.dtype)}
  params = logit_scale.clamp_params(params, config.optimizer.log_scale_range)
  params = {**params, HEADS: {name: heads[name].init(k[i], inputs[name])['params']
                              for i, name in enumerate(sorted(heads))}}
  return params, {'bank': bank.init(k[3], me.bank_size, dim)}


def defaults() -> ml_collections.ConfigDict:
  """config.method.declip: loss weights, text bank entries (a multiple of the global batch
  holding at least one step's 2 x global_batch insertions), SimSiam projector (3 layers) and
  predictor (hidden) widths, upper clamp of the logit scale."""
  return ml_collections.ConfigDict({
      'weights': {'mvs': 0.4, 'iss': 0.2, 'tss': 0.2, 'nns': 0.2},
      'bank_size': 65536, 'projector_dim': 1024, 'predictor_dim': 512,
      'max_logit_scale': 100.0})


def validate(config) -> None:
  """The four loss weights, a bank holding a step's T and T' insertions, positive head sizes."""
  me, batch, check = config.method.declip, config.data.global_batch, config_lib.check
  check(set(me.weights) == set(LOSSES), 'method.declip.weights',
        f'must name exactly {list(LOSSES)}, got {sorted(me.weights)}')
  for name in LOSSES:
    check(me.weights[name] >= 0, f'method.declip.weights.{name}', 'must be >= 0')
  check(isinstance(me.bank_size, int) and me.bank_size >= 2 * batch
        and me.bank_size % batch == 0, 'method.declip.bank_size',
        f'{me.bank_size!r} must be a multiple of data.global_batch={batch} and at least '
        f'2 x global_batch (T and T\' are enqueued each step)')
  for name in ('projector_dim', 'predictor_dim'):
    config_lib.check_int(me[name], f'method.declip.{name}', 1)
  check(me.max_logit_scale > 0, 'method.declip.max_logit_scale', 'must be positive')


def data_needs(config) -> base.DataNeeds:
  """A second image view, the MLM-masked and the EDA captions (data/views.py)."""
  del config
  return base.DataNeeds(views=VIEWS)


def extra_shardings(config, state_shardings, mesh: Mesh) -> dict:
  """The bank's rows split over the batch axes."""
  del state_shardings
  return {'bank': bank.shardings(mesh, config.batch_axes)}


def simsiam_loss(p1, z1, p2, z2) -> jnp.ndarray:
  """-1/2 [mean cos(p1, sg(z2)) + mean cos(p2, sg(z1))]."""
  cos = lambda p, z: jnp.sum(l2_normalize(p) * l2_normalize(jax.lax.stop_gradient(z)), axis=-1)
  return -0.5 * (cos(p1, z2).mean() + cos(p2, z1).mean())


def mlm_loss(logits: jnp.ndarray, labels: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(mean cross-entropy, accuracy) over positions with labels >= 0 (0 when there are none)."""
  logits = logits.astype(jnp.float32)
  valid = labels >= 0
  safe = jnp.where(valid, labels, 0)
  ce = jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, safe[..., None], -1)[..., 0]
  count = jnp.maximum(valid.sum(), 1)
  acc = jnp.sum(valid & (logits.argmax(-1) == safe)) / count
  return jnp.sum(jnp.where(valid, ce, 0.0)) / count, acc


def mvs_loss(images, texts, scale, loss_cfg, mesh: Mesh, batch_axes) -> dict[str, jnp.ndarray]:
  """Means of the contrastive losses (config.loss) over every (image view, text view) pair:
  'loss', 'loss/i2t', 'loss/t2i'; plus the first pair's accuracies."""
  pairs = [losses_api.compute(loss_cfg, {'image': x, 'text': y, 'scale': scale}, mesh, batch_axes)
           for x in images for y in texts]
  out = {k: sum(p[k] for p in pairs) / len(pairs) for k in ('loss', 'loss/i2t', 'loss/t2i')}
  return {**out, 'accuracy/i2t': pairs[0]['accuracy/i2t'],
          'accuracy/t2i': pairs[0]['accuracy/t2i']}


def nns_loss(images, texts, entries, scale, mesh: Mesh, batch_axes,
             label_smoothing: float = 0.0) -> jnp.ndarray:
  """Mean over (image view, text view) of the image->text loss whose columns are the texts'
  nearest bank rows (top-1 cosine in `entries`, the bank before this step's insertions)."""
  neighbours = [bank.nearest(entries, y, mesh, batch_axes)[0] for y in texts]
  terms = [contrastive.softmax_contrastive(x, nn_y, scale, mesh, batch_axes=batch_axes,
                                           label_smoothing=label_smoothing)['loss/i2t']
           for x in images for nn_y in neighbours]
  return sum(terms) / len(terms)


def make_objective(config, model, mesh: Mesh):
  """The train step's loss function for DeCLIP (see the module docstring)."""
  me, axes, loss_cfg = config.method.declip, config.batch_axes, config.loss
  heads = _heads(config, model.text_tower.vocab_size)

  def objective(params, model_state, extra, batch, rng):
    state = {'ms': model_state}

    def tower(method, inputs, i):  # one pass, threading the towers' batch-norm statistics
      out, state['ms'] = model.apply({'params': params, **state['ms']}, inputs, train=True,
                                     rngs={'dropout': jax.random.fold_in(rng, i)},
                                     mutable=list(state['ms']), method=method)
      return out

    z1, z2 = tower('project_image', batch['image'], 0), tower('project_image', batch['image2'], 1)
    t, seq = tower('encode_text_and_tokens', batch['tokens_mlm'], 2)
    t_eda = tower('encode_text', batch['tokens_eda'], 3)
    scale = logit_scale.capped(model.apply({'params': params}, method='logit_scale'),
                               me.max_logit_scale)
    x1, x2 = l2_normalize(z1), l2_normalize(z2)
    mvs = mvs_loss((x1, x2), (t, t_eda), scale, loss_cfg, mesh, axes)
    h = params[HEADS]
    proj = lambda z: heads['projector'].apply({'params': h['projector']}, z)
    pred = lambda z: heads['predictor'].apply({'params': h['predictor']}, z)
    p1, p2 = proj(z1), proj(z2)
    iss = simsiam_loss(pred(p1), p1, pred(p2), p2)
    logits = heads['mlm_head'].apply({'params': h['mlm_head']}, seq)
    tss, mlm_acc = mlm_loss(logits, batch['mlm_labels'])
    nns = nns_loss((x1, x2), (t, t_eda), extra['bank']['entries'], scale, mesh, axes,
                   loss_cfg.label_smoothing)
    new_bank = bank.enqueue(bank.enqueue(extra['bank'], t, mesh, axes), t_eda, mesh, axes)
    parts = {'mvs': mvs['loss'], 'iss': iss, 'tss': tss, 'nns': nns}
    total = sum(me.weights[k] * v for k, v in parts.items())
    losses = {'loss': total, **{f'loss/{k}': v for k, v in parts.items()},
              **{k: mvs[k] for k in ('loss/i2t', 'loss/t2i', 'accuracy/i2t', 'accuracy/t2i')},
              'accuracy/mlm': mlm_acc}
    return total, (losses, {'scale': scale}, state['ms'], {'bank': new_bank})

  return objective
