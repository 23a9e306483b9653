"""The one train loop: mesh, sharded state, jitted step, periodic logging/checkpoints/evals, resume."""

import json
import logging
import os
from typing import Any

import flax
from flax import traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils

from vlalign import checkpoint, config_lib, errors, metrics_lib, optim, parallel, perf
from vlalign import preemption, workdir_lock
from vlalign.data import concepts as concepts_lib
from vlalign.data import filters, image_ops, pipeline
from vlalign.data import sources as sources_lib
from vlalign.data.embedded import generator
from vlalign.data import tokenizers as tokenizers_lib
from vlalign.evaluate import benchmarks
from vlalign.evaluate.heldout import HeldoutEvaluator
from vlalign.methods import get_method
from vlalign.methods import zerovl
from vlalign.models import two_tower
from vlalign.weights import load as weights_load


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training (all arrays, checkpointed as one pytree)."""
  step: jnp.ndarray
  params: Any
  opt_state: Any
  rng: jnp.ndarray
  skipped: jnp.ndarray  # updates dropped: loss, gradients or the updated state not finite
  model_state: Any  # non-trainable model variables (batch-norm statistics); {} for most towers
  # A method's state beyond the parameters (vlalign/methods): key queues, the nearest-neighbour
  # bank, momentum (EMA) parameters; {} for 'clip'.
  extra: Any = flax.struct.field(default_factory=dict)


def prepare_data(config: ml_collections.ConfigDict) -> dict:
  """Makes sure the configured data exists; returns the resolved training `sources`, the
  tokenizer's `vocab` file (data.tokenizer.vocab_file, else the embedded data's) and the
  embedded `heldout` glob ('' when config.evals.heldout is off)."""
  d = config.data
  need_embedded = (config.evals.heldout or not tokenizers_lib.vocab_path(d) or
                   any(sources_lib.parse_spec(s)[0] == 'embedded' for s in d.sources))
  embedded = None
  if need_embedded:
    e = d.embedded
    embedded = generator.ensure_dataset(
        os.path.join(d.cache_dir, 'embedded'), seed=e.seed, train_sizes=dict(e.train_sizes),
        heldout_size=e.heldout_size, noise_fraction=e.noise_fraction, num_shards=e.num_shards,
        vocab_size=e.vocab_size)
  for spec in d.sources:
    kind, arg = sources_lib.parse_spec(spec)
    if kind == 'tfds':  # one line for an unknown or unprepared TFDS dataset
      errors.check_tfds(arg.rpartition(':')[0], d.tfds_data_dir, f'config.data.sources: {spec!r}')
  srcs = [sources_lib.resolve(spec, d, embedded) for spec in d.sources]
  return {'sources': srcs, 'vocab': tokenizers_lib.vocab_path(d) or embedded['vocab'],
          'heldout': embedded['heldout'] if config.evals.heldout else ''}


def make_tokenizer(config: ml_collections.ConfigDict, vocab_path: str):
  """The tokenizer of a run (training, evaluation, tools and vlalign.inference all use this);
  `vocab_path` replaces config.data.tokenizer's file (the embedded data's vocab when unset)."""
  return tokenizers_lib.make_tokenizer(config.data, vocab_path)


def build_model(config: ml_collections.ConfigDict, tokenizer) -> two_tower.TwoTower:
  """The run's two-tower model for `tokenizer` (its vocabulary and where its rows' text ends)."""
  return two_tower.build_model(config.model, tokenizer.vocab_size, config.data.max_len,
                               **tokenizers_lib.model_token_ids(tokenizer))


def _concepts(config) -> concepts_lib.Concepts | None:
  """The stored visual concepts the method's data needs (ViCHA's), else None."""
  spec = get_method(config.method.name).data_needs(config).concepts
  return concepts_lib.Concepts(*spec) if spec else None


def init_state(config, model, tx, mesh, load_weights: bool = True) -> tuple[TrainState, Any]:
  """Sharded initial state built by jit(init, out_shardings) from its abstract shape; with
  `load_weights`, the configured pretrained weights (model.init_from, model.<tower>.init_from)
  replace the initial values before the method's state and the optimizer state are built."""
  d = config.data
  images = jnp.zeros((1, d.image_size, d.image_size, 3), jnp.float32)
  tokens = jnp.zeros((1, d.max_len), jnp.int32)
  method = get_method(config.method.name)

  def init_fn(seed, pretrained):
    params_rng, step_rng = jax.random.split(jax.random.PRNGKey(seed))
    variables = _replace_leaves(model.init({'params': params_rng}, images, tokens), pretrained)
    # The method's heads join the params; its state (queues, EMA copies) goes to `extra`.
    params, extra = method.init(config, model, variables.pop('params'), variables,
                                jax.random.fold_in(params_rng, 1))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=step_rng, skipped=jnp.zeros((), jnp.int32), model_state=variables,
                      extra=extra)

  abstract = jax.eval_shape(init_fn, config.seed, {})
  shardings = parallel.param_shardings(abstract, mesh, config.partition_rules)
  shardings = shardings.replace(extra=method.extra_shardings(config, shardings, mesh))
  pretrained = _pretrained(config, abstract, shardings) if load_weights else {}
  state = jax.jit(init_fn, static_argnums=0, out_shardings=shardings)(config.seed, pretrained)
  return state, shardings


def _replace_leaves(variables: dict, replacements: dict) -> dict:
  """`variables` with the leaves named in `replacements` ('params/a/b' -> array) swapped."""
  if not replacements:
    return variables
  flat = traverse_util.flatten_dict(variables, sep='/')
  flat.update(replacements)
  return traverse_util.unflatten_dict(flat, sep='/')


def _pretrained(config, abstract: TrainState, shardings: TrainState) -> dict:
  """The configured pretrained arrays, read on the host, cast to the parameters' dtype
  (float32 master weights whatever the compute dtype) and placed with their shardings."""
  variables = {'params': abstract.params, **abstract.model_state}
  loaded = weights_load.initial_variables(config.model, variables)
  if not loaded:
    return {}
  flat = lambda tree: {'/'.join(str(getattr(k, 'key', k)) for k in path): leaf for path, leaf in
                       jax.tree_util.tree_flatten_with_path(tree)[0]}
  dtypes = flat(variables)
  places = flat({'params': shardings.params, **shardings.model_state})
  return {k: jax.device_put(np.asarray(v, dtypes[k].dtype), places[k]) for k, v in loaded.items()}


def all_finite(tree: Any) -> jnp.ndarray:
  """True when every floating-point leaf of `tree` is finite (a scalar bool; jit-friendly)."""
  leaves = [jnp.isfinite(x).all() for x in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
  return jnp.stack(leaves).all() if leaves else jnp.asarray(True)


def device_images(batch: dict, data_cfg) -> dict:
  """`batch` with every uint8 image ([n, h, w, 3]: config.data.uint8_batches) normalised as
  image_ops.normalize does it on the host (the same float32 formula; XLA may fuse it, so equal
  to float round-off), here inside the jitted step, on the accelerator; other entries
  unchanged."""
  stats = image_ops.pixel_stats(data_cfg)
  mean, std = stats['mean'], stats['std']

  def norm(x):
    if x.dtype != jnp.uint8 or x.ndim != 4:
      return x
    x = x.astype(jnp.float32)
    if mean == image_ops.DEFAULT_MEAN and std == image_ops.DEFAULT_STD:
      return x / 127.5 - 1.0
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
  return {k: norm(v) for k, v in batch.items()}


def make_train_step(config, model, tx, lr_fn, mesh, state_shardings, batch_sharding):
  """Jitted (state, batch) -> (state, metrics) with explicit shardings and donated state."""
  nan_steps = tuple(int(s) for s in config.debug.nan_loss_at_steps)
  method = get_method(config.method.name)
  frozen = optim.frozen_towers(config.model)

  # (params, model_state, extra, batch, rng) -> (loss, (losses, logit params, new model_state,
  # new extra)): the method's (methods/base.py); 'clip' chooses ZeroVL's mixup itself.
  objective = method.make_objective(config, model, mesh)

  def loss_fn(params, model_state, extra, batch, rng, step):
    loss, (losses, logit_params, model_state, extra) = objective(params, model_state, extra,
                                                                 batch, rng)
    if nan_steps:  # fault injection (config.debug): a NaN loss and NaN gradients at these steps
      bad = jnp.isin(step + 1, jnp.asarray(nan_steps, jnp.int32))
      loss = loss * jnp.where(bad, jnp.nan, 1.0)
      losses = {**losses, 'loss': loss}
    return loss, (losses, logit_params, model_state, extra)

  # None: jax.value_and_grad of the objective; 'clip' with grad_accum.micro_batches > 1 gives
  # ZeroVL's decoupled accumulation.
  decoupled = method.make_value_and_grad(config, model, mesh)

  def step_fn(state: TrainState, batch):
    batch = device_images(batch, config.data)
    rng = jax.random.fold_in(state.rng, state.step)
    if decoupled is None:
      grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
      (loss, (losses, logit_params, model_state, extra)), grads = grad_fn(
          state.params, state.model_state, state.extra, batch, rng, state.step)
    else:  # the method's own value and gradient (ZeroVL's two-pass accumulation)
      (loss, (losses, logit_params, model_state, extra)), grads = decoupled(
          state.params, state.model_state, state.extra, batch, rng)
      if nan_steps:
        bad = jnp.isin(state.step + 1, jnp.asarray(nan_steps, jnp.int32))
        factor = jnp.where(bad, jnp.nan, 1.0)
        loss, grads = loss * factor, jax.tree.map(lambda g: g * factor, grads)
        losses = {**losses, 'loss': loss}
    if frozen:  # locked towers (LiT): no gradient, no update, statistics kept
      grads = {k: jax.tree.map(jnp.zeros_like, g) if k in frozen else g for k, g in grads.items()}
      model_state = _keep_towers(model_state, state.model_state, frozen)
    grad_norm = optax.global_norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # A non-finite loss, gradient or update (eps=0's 0/0, an lr that overflows), or new model /
    # method state, never reaches the state: the update is dropped and counted; the host then
    # stops or continues according to config.nan_policy. One global norm over the updates and
    # the new states (inf or nan when any entry is; also when an entry exceeds ~1.8e19, an
    # update no run survives): a per-leaf isfinite over the new state cost XLA:CPU 45 s more
    # compile time for the tiny demo step. Finite gradients keep Adam's / LAMB's moments finite.
    finite = (jnp.isfinite(loss) & jnp.isfinite(grad_norm) &
              jnp.isfinite(optax.global_norm((updates, model_state, extra))))
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
    model_state, extra = keep(model_state, state.model_state), keep(extra, state.extra)
    skipped = state.skipped + (~finite).astype(jnp.int32)
    metrics = {f'train/{k}': v for k, v in losses.items()}
    metrics.update({'train/grad_norm': grad_norm, 'train/param_norm': optax.global_norm(params),
                    'train/lr': lr_fn(state.step),
                    'train/temperature': 1.0 / logit_params['scale'],
                    'train/skipped_steps': skipped})
    if 'bias' in logit_params:
      metrics['train/bias'] = logit_params['bias']
    new = state.replace(step=state.step + 1, params=params, opt_state=opt_state, skipped=skipped,
                        model_state=model_state, extra=extra)
    return new, metrics

  # `batch_sharding` is a prefix of the batch: every key (views included) is split on the batch.
  return jax.jit(step_fn, in_shardings=(state_shardings, batch_sharding),
                 out_shardings=(state_shardings, None), donate_argnums=0)


def _keep_towers(new: dict, old: dict, towers: tuple[str, ...]) -> dict:
  """`new` model state (batch-norm statistics) with `old`'s values for the named towers."""
  return {c: {k: old[c][k] if k in towers else v for k, v in tree.items()}
          for c, tree in new.items()}


def _abstract(state, shardings):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      state, shardings)


def _check_finite(state: TrainState, step: int, policy: str, seen: int) -> int:
  """Number of skipped updates so far; raises under policy 'stop' when it grew."""
  skipped = int(jax.device_get(state.skipped))
  if skipped > seen:
    msg = (f'non-finite loss, gradient or updated state: {skipped} update(s) dropped by step '
           f'{step}; parameters and checkpoints hold only finite updates')
    if policy == 'stop':
      raise FloatingPointError(msg + '; stopping (config.nan_policy="stop"; "skip" continues)')
    logging.warning('%s (config.nan_policy="skip")', msg)
  return skipped


def _log(writer, progress, step, metrics, batch_size, flops_per_step=0.0,
         peak=0.0) -> dict[str, float]:
  scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
  rate = progress.rate(step)
  scalars.update({'train/steps_per_sec': rate, 'train/examples_per_sec': rate * batch_size})
  if flops_per_step:
    scalars.update(perf.perf_metrics(flops_per_step, rate, peak))
  writer.write_scalars(step, scalars)
  logging.info('%s', progress.line(step, rate, scalars))
  return scalars


def _report_eval(workdir: str, step: int, results: dict[str, float], suffix: str = '',
                 entries=()) -> None:
  """Logs eval results and writes them (process 0) to <workdir>/eval/<name><suffix>.json: name
  'heldout' for the embedded split's metrics, else the config.evals.datasets entry's name (also
  as <name><suffix>.clip_benchmark.json, CLIP_benchmark's format, for `entries`)."""
  logging.info('eval at step %d: %s', step,
               ', '.join(f'{k.split("/", 1)[1]}={v:.3f}' for k, v in results.items()))
  groups = {}
  for key, value in results.items():
    name = key.split('/')[1]
    groups.setdefault('heldout' if name in ('retrieval', 'zeroshot') else name, {})[key] = value
  if jax.process_index() == 0:
    os.makedirs(os.path.join(workdir, 'eval'), exist_ok=True)
    for name, values in groups.items():
      with open(os.path.join(workdir, 'eval', f'{name}{suffix}.json'), 'w') as f:
        json.dump({'step': step, **values}, f, indent=1)
    benchmarks.write_clip_benchmark(os.path.join(workdir, 'eval'), entries, results,
                                    os.path.basename(workdir), f'step{step}', suffix)


def _evaluate(evaluator, state, writer, workdir, step) -> dict[str, float]:
  results = evaluator.run(state.params, state.model_state)
  writer.write_scalars(step, results)
  writer.flush()
  _report_eval(workdir, step, results, entries=evaluator.config.evals.datasets)
  return results


def _gather_hosts(vector: np.ndarray) -> np.ndarray:
  """[process_count, n] int64 rows of every process's vector (all processes call this)."""
  if jax.process_count() == 1:
    return vector[None]
  halves = multihost_utils.process_allgather(vector.astype(np.int64).view(np.int32))
  return np.asarray(halves, np.int32).reshape(jax.process_count(), -1).view(np.int64)


def data_item(config, rows) -> dict:
  """A checkpoint's data item: every host's DataState vector (`rows`, in process order) and the
  settings its streams depend on."""
  return {'version': pipeline.STATE_VERSION, 'sources': list(config.data.sources),
          'mixing': config.data.mixing, 'host_split': config.data.host_split,
          'process_count': jax.process_count(), 'hosts': np.asarray(rows).tolist(),
          'seed': config.seed, 'global_batch': config.data.global_batch,
          'cycle_length': config.data.cycle_length, 'shuffle_buffer': config.data.shuffle_buffer}


def _data_checkpoint(it: pipeline.TrainIterator, config) -> dict:
  """Every host's data state (collective: all processes call it at the same steps)."""
  return data_item(config, _gather_hosts(it.state().to_vector()))


def _check_resume_settings(saved: dict, config) -> None:
  """Refuses (ConfigError naming the field) a resume whose seed, global batch or stream grouping
  (data.cycle_length, data.shuffle_buffer) differs from the checkpoint's, unless
  config.resume_allow_changes; older checkpoints do not record them."""
  for key, field, now in (('seed', 'seed', config.seed),
                          ('global_batch', 'data.global_batch', config.data.global_batch),
                          ('cycle_length', 'data.cycle_length', config.data.cycle_length),
                          ('shuffle_buffer', 'data.shuffle_buffer', config.data.shuffle_buffer)):
    if key not in saved or saved[key] == now:
      continue
    if not config.resume_allow_changes:
      raise config_lib.ConfigError(
          f'config.{field}: {now!r} differs from the checkpoint\'s {saved[key]!r}; resume with '
          f'the same value, or set config.resume_allow_changes=True to continue with the change')
    logging.warning('config.%s changed from %r to %r on resume (config.resume_allow_changes)',
                    field, saved[key], now)


def _data_state(saved: dict, config) -> pipeline.DataState:
  """This host's data state from a checkpoint's data item; CheckpointMismatchError when the
  run cannot continue the saved streams exactly."""
  n = len(config.data.sources)
  need = ('position',) if 'version' not in saved else (  # the first format had no version
      'sources', 'mixing', 'host_split', 'process_count', 'hosts')
  missing = [k for k in need if k not in saved]
  if missing:
    raise ValueError(f'the data item lacks {missing}')
  if 'hosts' not in saved:  # the first format: one stream position shared by every host
    if n != 1:
      raise checkpoint.CheckpointMismatchError(
          f'the checkpoint holds one data position; config.data.sources has {n} sources')
    state = pipeline.DataState([int(saved['position'])], [0], [[0] * pipeline.NUM_REASONS])
    return _placed(state, config, 1)
  for key, now in (('sources', list(config.data.sources)), ('mixing', config.data.mixing),
                   ('host_split', config.data.host_split),
                   ('process_count', jax.process_count())):
    if saved[key] != now:
      raise checkpoint.CheckpointMismatchError(
          f'the data position in the checkpoint was saved with {key}={saved[key]!r}; this run '
          f'has {now!r}, so its input streams differ and it cannot continue them exactly. '
          f'Resume with the same setting (or start a fresh workdir).')
  state = pipeline.DataState.from_vector(saved['hosts'][jax.process_index()], n,
                                          int(saved['version']))
  return _placed(state, config, int(saved['version']))


def _placed(state: pipeline.DataState, config, version: int) -> pipeline.DataState:
  """`state`, when its positions can be continued exactly; a state of an older format that
  holds positions past the start is refused (CheckpointMismatchError), or with
  config.resume_allow_changes its streams restart from their first record (counts kept)."""
  if not state.unplaced():
    return state
  if not config.resume_allow_changes:
    raise checkpoint.CheckpointMismatchError(
        f'the checkpoint\'s data state (format {version}) gives stream positions '
        f'{state.positions} in the record order of vlalign before data format '
        f'{pipeline.STATE_VERSION} (groups of files in an order drawn by TF ops, data/groups.py), which this version cannot '
        f'continue exactly; resume with the version that wrote it, or set '
        f'config.resume_allow_changes=True to go on with each data stream restarted from its '
        f'first record')
  logging.warning('config.resume_allow_changes: the data state of format %d cannot be '
                  'continued exactly; the data streams restart from their first record', version)
  n = len(state.positions)
  state.positions, state.groups, state.in_group = [0] * n, [0] * n, [0] * n
  return state


def _has_checkpoint(workdir: str) -> bool:
  """Whether `workdir` holds a step checkpoint (then the run resumes from it)."""
  root = os.path.join(workdir, 'checkpoints')
  return os.path.isdir(root) and any(name.isdigit() for name in os.listdir(root))


def _restore(config, workdir, state, shardings):
  manager = checkpoint.make_manager(os.path.join(workdir, 'checkpoints'),
                                    save_every=config.checkpoint_every,
                                    keep=config.keep_checkpoints)
  data_state = None
  restored = checkpoint.restore_latest(manager, _abstract(state, shardings),
                                       lambda saved: (saved, _data_state(saved, config)))
  if restored:
    step0, state, (saved, data_state) = restored
    _check_resume_settings(saved, config)
    logging.info('Resumed from checkpoint at step %d (data positions %s)', step0,
                 data_state.positions)
  return manager, state, data_state


def _skip_metrics(it: pipeline.TrainIterator) -> dict[str, float]:
  """data/skipped/<reason> summed over hosts (collective), for the reasons seen so far."""
  total = _gather_hosts(it.skipped()).sum(0)
  out = {f'data/skipped/{name}': float(n) for name, n in filters.counts_dict(total).items()}
  out['data/skipped/total'] = float(total.sum())
  return out


class _IdLog:
  """config.debug.record_example_ids: the ids of each step's examples on this host, appended to
  <workdir>/example_ids/process_<i>.jsonl (one line per step; a resumed run appends)."""

  def __init__(self, workdir: str, enabled: bool):
    self._f = None
    if enabled:
      os.makedirs(os.path.join(workdir, 'example_ids'), exist_ok=True)
      self._f = open(os.path.join(workdir, 'example_ids',
                                  f'process_{jax.process_index()}.jsonl'), 'a')

  def write(self, step: int, ids: np.ndarray) -> None:
    if self._f:
      self._f.write(json.dumps({'step': step, 'ids': [i.decode() for i in ids]}) + '\n')
      self._f.flush()

  def close(self) -> None:
    if self._f:
      self._f.close()


def restore_for_inference(config: ml_collections.ConfigDict, workdir: str,
                          step: int | None = None) -> dict[str, Any]:
  """The model, tokenizer, data paths and restored variables of the checkpoint at `step`
  (default: the newest) in `workdir`: keys model, tokenizer, paths, params, model_state, step."""
  config_lib.validate(config)
  mesh = parallel.make_mesh(config.mesh)
  paths = prepare_data(config)
  tokenizer = make_tokenizer(config, paths['vocab'])
  model = build_model(config, tokenizer)
  tx, _ = optim.make_optimizer(config.optimizer, config.total_steps,
                               optim.frozen_towers(config.model))
  state, shardings = init_state(config, model, tx, mesh, load_weights=False)
  manager = checkpoint.make_manager(os.path.join(workdir, 'checkpoints'), save_every=1, keep=None)
  step = checkpoint.pick_step(sorted(manager.all_steps()), step,
                              os.path.join(workdir, 'checkpoints'))
  state, _ = checkpoint.restore_step(manager, step, _abstract(state, shardings))
  return {'model': model, 'tokenizer': tokenizer, 'paths': paths, 'params': state.params,
          'model_state': state.model_state, 'step': step}


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                        step: int | None = None) -> tuple[int, dict[str, float]]:
  """Eval metrics of the checkpoint at `step` (default: the newest) in `workdir`; also written
  to <workdir>/eval/heldout_step<step>.json (and <name>_step<step>.json per evals.datasets)."""
  r = restore_for_inference(config, workdir, step)
  step = r['step']
  logging.info('evaluating the checkpoint at step %d of %s', step, workdir)
  if not r['paths']['heldout'] and not config.evals.datasets:
    raise config_lib.ConfigError('config.evals: heldout is off and datasets is empty: nothing '
                                 'to evaluate')
  evaluator = HeldoutEvaluator(config, r['model'], r['tokenizer'], r['paths']['heldout'])
  results = evaluator.run(r['params'], r['model_state'])
  _report_eval(workdir, step, results, f'_step{step}', config.evals.datasets)
  return step, results


def _check_batch_split(config: ml_collections.ConfigDict, mesh) -> None:
  """The global batch divides over the mesh's batch axes and each shard over micro-batches."""
  parallel.check_batch(config.data.global_batch, mesh, config.batch_axes)
  per_shard = config.data.global_batch // zerovl.batch_shards(mesh, config.batch_axes)
  if per_shard % config.grad_accum.micro_batches:
    raise config_lib.ConfigError(
        f'config.grad_accum.micro_batches: {config.grad_accum.micro_batches} does not divide '
        f'the {per_shard} rows each batch shard holds (data.global_batch / batch shards)')


def _lock_workdir(workdir: str) -> str | None:
  """Process 0 takes the workdir lock (workdir_lock); every process stops with
  WorkdirLockedError when it could not. Returns the lock path on process 0."""
  path, error = None, ''
  if jax.process_index() == 0:
    try:
      path = workdir_lock.acquire(workdir)
    except workdir_lock.WorkdirLockedError as e:
      error = str(e)
  if jax.process_count() > 1:
    failed = int(multihost_utils.broadcast_one_to_all(np.int32(bool(error))))
    if failed and not error:
      error = f'process 0 could not take the lock of workdir {workdir} (another run uses it)'
  if error:
    raise workdir_lock.WorkdirLockedError(error)
  return path


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains to `config.total_steps` in `workdir`, resuming from its newest checkpoint; returns
  the final held-out metrics ({} when stopped early by config.stop_at_step). One run per
  workdir: a second stops with WorkdirLockedError."""
  config_lib.validate(config)
  workdir = os.path.abspath(workdir)  # orbax needs absolute paths
  os.makedirs(workdir, exist_ok=True)
  lock = _lock_workdir(workdir)
  refresher = workdir_lock.Refresher(lock) if lock else None
  try:
    return _train_and_evaluate(config, workdir)
  finally:
    if lock:
      refresher.stop()
      workdir_lock.release(lock)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  if jax.process_index() == 0:  # the resolved config: evaluate, tools and inference read it
    config_lib.save_json(config, os.path.join(workdir, 'config.json'))
  mesh = parallel.make_mesh(config.mesh)
  _check_batch_split(config, mesh)
  logging.info('mesh %s on %d devices, %d processes', dict(mesh.shape), jax.device_count(),
               jax.process_count())
  paths = prepare_data(config)
  concepts = _concepts(config)  # before anything compiles: a missing file fails here
  errors.check_interrupted()  # a signal during setup: one line, nothing to save
  tokenizer = make_tokenizer(config, paths['vocab'])
  model = build_model(config, tokenizer)
  tx, lr_fn = optim.make_optimizer(config.optimizer, config.total_steps,
                                   optim.frozen_towers(config.model))
  # Pretrained weights (init_from) start a run; a resumed run takes its own checkpoint.
  state, shardings = init_state(config, model, tx, mesh,
                                load_weights=not _has_checkpoint(workdir))
  manager, state, data_state = _restore(config, workdir, state, shardings)
  errors.check_interrupted()
  start = int(jax.device_get(state.step))
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  logging.info('model has %s parameters; training steps %d..%d', f'{n_params:,}', start,
               config.total_steps)
  batch_sh = parallel.batch_sharding(mesh, config.batch_axes)
  train_step = make_train_step(config, model, tx, lr_fn, mesh, shardings, batch_sh)
  it = pipeline.TrainIterator(config.data, paths['sources'], tokenizer, seed=config.seed,
                              state=data_state, process_index=jax.process_index(),
                              process_count=jax.process_count(), concepts=concepts)
  evaluator = (HeldoutEvaluator(config, model, tokenizer, paths['heldout'])
               if paths['heldout'] or config.evals.datasets else None)
  if evaluator is None:
    logging.info('held-out evaluation is off (config.evals.heldout)')
  id_log = _IdLog(workdir, config.debug.record_example_ids)
  errors.check_interrupted()
  writer = metrics_lib.make_writer(workdir)
  stop = preemption.StopSignal()
  watchdog = preemption.PeerWatchdog(config.peer_timeout_s, workdir)
  profiler = perf.Profiler(workdir, config.profile.start_step, config.profile.num_steps)
  try:
    state, finished = _train_loop(config, workdir, state, train_step, batch_sh, it, manager,
                                  evaluator, writer, id_log, (stop, watchdog), profiler, start)
    watchdog.close()  # the final evaluation may take longer than config.peer_timeout_s
    if not finished or evaluator is None:
      return {}
    return _evaluate(evaluator, state, writer, workdir, config.total_steps)
  finally:
    watchdog.beat(-1)  # armed through the cleanup: a save waiting on a dead peer must end too
    it.close()
    id_log.close()
    profiler.close()
    stop.restore()
    manager.wait_until_finished()
    watchdog.close()
    writer.close()


def _report_stop(manager, requested: str, step: int) -> None:
  """Logs the stop on a signal, after checking the checkpoint of `step` is on disk (the log
  claims only what exists)."""
  if step in checkpoint.saved_steps(manager):
    logging.warning('%s received: saved a checkpoint at step %d; exiting. Start the same '
                    'command again to resume.', requested, step)
  else:
    logging.error('%s received at step %d, but its checkpoint is not in %s; exiting.',
                  requested, step, manager.directory)


def _train_loop(config, workdir, state, train_step, batch_sh, it, manager, evaluator, writer,
                id_log, guards, profiler, start) -> tuple[TrainState, bool]:
  """Steps start+1 .. (config.stop_at_step or total_steps): logs, checks for non-finite
  updates, checkpoints, evaluates every config.eval_every. Returns (state, finished): finished
  is False when a signal or config.stop_at_step ended the run before total_steps. `guards`:
  (preemption.StopSignal, preemption.PeerWatchdog)."""
  stop, watchdog = guards
  progress = metrics_lib.Progress(config.total_steps, start)
  last = config.stop_at_step or config.total_steps
  skipped = int(jax.device_get(state.skipped))
  peak, peak_source = perf.peak_flops_per_device(config)
  logging.info('MFU: %s', f'logged against {peak:.4g} FLOP/s per device ({peak_source})'
               if peak else f'not logged ({peak_source})')
  compiled, flops_per_step = None, 0.0
  for step in range(start + 1, last + 1):
    host_batch = it.next_batch(lambda: bool(stop.requested))  # signals honoured while waiting
    if host_batch is None:  # no batch to step on: keep what the last step made, then exit
      if step - 1 > start and manager.latest_step() != step - 1:
        checkpoint.save(manager, step - 1, state, _data_checkpoint(it, config), force=True)
      logging.warning('%s received while waiting for the batch of step %d; the newest '
                      'checkpoint holds the run; exiting.', stop.requested, step)
      return state, False
    batch = parallel.global_batch(host_batch, batch_sh)
    id_log.write(step, it.ids)
    if compiled is None:  # compiled ahead of time once, for XLA's FLOPs of the step
      compiled = train_step.lower(state, batch).compile()
      flops_per_step = perf.compiled_flops(compiled)
      logging.info('train step compiled: %.4g FLOPs per device per step', flops_per_step)
      preemption.align_processes(f'vlalign_compiled_{start}')
      watchdog.beat(start)  # armed from here: step start + 1 may wait on a dead peer too
    profiler.before_step(step)
    state, metrics = compiled(state, batch)
    profiler.after_step(step, state)
    requested = stop.should_stop(step)  # read once (the same step on every process)
    stopping = bool(requested) or step == last
    if step % config.log_every == 0 or stopping or manager.should_save(step):
      skipped = _check_finite(state, step, config.nan_policy, skipped)
    if step % config.log_every == 0 or stopping:
      metrics = {**metrics, **_skip_metrics(it)}
      _log(writer, progress, step, metrics, config.data.global_batch, flops_per_step, peak)
    if stopping or manager.should_save(step):
      checkpoint.save(manager, step, state, _data_checkpoint(it, config), force=stopping)
    if requested:
      _report_stop(manager, requested, step)
      return state, False
    if (evaluator and config.eval_every and step % config.eval_every == 0 and
        step < config.total_steps):
      _evaluate(evaluator, state, writer, workdir, step)
    watchdog.beat(step)
  if last < config.total_steps:
    logging.info('stopping at step %d as config.stop_at_step asks', last)
    return state, False
  return state, True
