"""Evaluator on the embedded held-out split (retrieval, attribute zero-shot classification) and
on the sources listed in config.evals.datasets (evaluate/datasets.py)."""

import logging
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from vlalign.data import pipeline
from vlalign.data.embedded import generator
from vlalign.evaluate import datasets
from vlalign.evaluate import metrics as metrics_lib


def batched_apply(fn: Callable, data: np.ndarray, batch: int) -> np.ndarray:
  """Applies a jitted fn over fixed-size batches (last one padded), concatenating results."""
  outs = []
  for start in range(0, len(data), batch):
    chunk = data[start:start + batch]
    pad = batch - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
    outs.append(np.asarray(fn(chunk))[:batch - pad])
  return np.concatenate(outs)


class HeldoutEvaluator:
  """Embeds the held-out split with the current parameters and reports eval/* metrics."""

  def __init__(self, config, model, tokenizer, heldout_pattern: str, with_datasets: bool = True):
    """heldout_pattern '' skips the embedded held-out split (config.evals.heldout off);
    with_datasets False skips config.evals.datasets (tools that only embed the split)."""
    self.config = config
    self.data = (pipeline.load_eval_set(heldout_pattern, config.data, tokenizer)
                 if heldout_pattern else None)
    self.datasets = datasets.build_all(config, tokenizer, self.data) if with_datasets else []
    self.prompts = generator.load_prompts()
    self.tokenizer = tokenizer
    self.batch = config.data.eval_batch
    self._img = jax.jit(lambda v, x: model.apply(v, x, method='encode_image'))
    self._txt = jax.jit(lambda v, t: model.apply(v, t, method='encode_text'))

  def _prompt_tokens(self, attribute: str) -> tuple[np.ndarray, int, int]:
    entry = self.prompts[attribute]
    texts = [t.format(c) for c in entry['classes'] for t in entry['templates']]
    tokens = np.asarray(self.tokenizer.tokenize(np.array(texts, dtype=object)))
    return tokens, len(entry['classes']), len(entry['templates'])

  @staticmethod
  def variables(params: Any, model_state: Any = None) -> dict:
    """The model variables, as host-usable arrays on every process."""
    variables = {'params': params, **(model_state or {})}
    if jax.process_count() > 1:
      # Parameters span the devices of every process (replicated or FSDP-sharded): each process
      # gathers a full host copy and embeds the (small) held-out set on its own first device.
      variables = multihost_utils.process_allgather(variables, tiled=True)
    return variables

  def embed(self, variables: dict) -> tuple[np.ndarray, np.ndarray]:
    """Normalised image and text embeddings of the held-out pairs, row for row."""
    img = batched_apply(lambda x: self._img(variables, x), self.data['image'], self.batch)
    txt = batched_apply(lambda t: self._txt(variables, t), self.data['tokens'], self.batch)
    return (metrics_lib.check_finite(img, 'held-out image'),
            metrics_lib.check_finite(txt, 'held-out text'))

  def run(self, params: Any, model_state: Any = None) -> dict[str, float]:
    """All held-out metrics for `params` (keys eval/retrieval/* and eval/zeroshot/*);
    `model_state` holds non-trainable variables such as batch-norm statistics."""
    t0 = time.time()
    variables = self.variables(params, model_state)
    out = datasets.run_all(
        self.datasets, lambda x: metrics_lib.check_finite(
            batched_apply(lambda a: self._img(variables, a), x, self.batch), 'image'),
        lambda t: metrics_lib.check_finite(
            batched_apply(lambda a: self._txt(variables, a), t, self.batch), 'text'))
    if self.data is None:
      return out
    img, txt = self.embed(variables)
    if self.config.evals.retrieval:
      out.update({f'eval/retrieval/{k}': v
                  for k, v in metrics_lib.retrieval_metrics(img, txt).items()})
    single = self.data['num_objects'] == 1
    for attribute in self.config.evals.zeroshot:
      tokens, n_cls, n_tpl = self._prompt_tokens(attribute)
      emb = batched_apply(lambda t: self._txt(variables, t), tokens, self.batch)
      cls = metrics_lib.class_embeddings(emb.reshape(n_cls, n_tpl, -1))
      labels = self.data[_PLURAL[attribute]][single]
      out[f'eval/zeroshot/{attribute}_top1'] = metrics_lib.topk_accuracy(img[single], cls, labels)
      if n_cls > 5:
        out[f'eval/zeroshot/{attribute}_top5'] = metrics_lib.topk_accuracy(img[single], cls,
                                                                           labels, 5)
    logging.info('held-out eval on %d pairs took %.1fs', len(img), time.time() - t0)
    return out


_PLURAL = {'color': 'colors', 'shape': 'shapes', 'size': 'sizes'}
