"""Retrieval and zero-shot metrics on embeddings (NumPy, exact)."""

from typing import Sequence

import numpy as np


class NonFiniteEmbeddingError(FloatingPointError):
  """Embeddings with NaN or inf: no metric of them means anything (a NaN similarity compares
  false, so a NaN model would rank every match first and score R@1 = 1)."""


def check_finite(emb: np.ndarray, what: str) -> np.ndarray:
  """`emb` unchanged when every value is finite; else NonFiniteEmbeddingError (one line)."""
  emb = np.asarray(emb)
  bad = ~np.isfinite(emb).reshape(len(emb), -1).all(axis=1) if emb.ndim else ~np.isfinite(emb)
  if bad.any():
    raise NonFiniteEmbeddingError(
        f'{int(bad.sum())} of {bad.size} {what} embeddings are not finite (NaN/inf parameters?); '
        f'refusing to evaluate them')
  return emb


def recall_at_k(sim: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
  """R@K for a square query x candidate similarity matrix whose match is on the diagonal.

  A query is a hit at K when fewer than K candidates score strictly higher than its match.
  """
  sim = check_finite(np.asarray(sim, np.float64), 'similarity')
  pos = np.diag(sim)[:, None]
  rank = (sim > pos).sum(axis=1)
  return {f'r{k}': float((rank < k).mean()) for k in ks}


def retrieval_metrics(image_emb: np.ndarray, text_emb: np.ndarray,
                      ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
  """i2t_r{k} and t2i_r{k} for paired rows of normalised embeddings, plus rsum (in percent)."""
  image_emb, text_emb = check_finite(image_emb, 'image'), check_finite(text_emb, 'text')
  sim = np.asarray(image_emb, np.float32) @ np.asarray(text_emb, np.float32).T
  out = {f'i2t_{k}': v for k, v in recall_at_k(sim, ks).items()}
  out.update({f't2i_{k}': v for k, v in recall_at_k(sim.T, ks).items()})
  out['rsum'] = 100.0 * sum(out.values())
  return out


def class_embeddings(prompt_emb: np.ndarray) -> np.ndarray:
  """[classes, templates, d] normalised prompt embeddings -> [classes, d] ensemble (mean, renormalised)."""
  mean = prompt_emb.mean(axis=1)
  return mean / np.linalg.norm(mean, axis=-1, keepdims=True)


def topk_accuracy(image_emb: np.ndarray, class_emb: np.ndarray, labels: np.ndarray,
                  k: int = 1) -> float:
  """Fraction of images whose label is among the k classes of highest similarity."""
  scores = check_finite(image_emb, 'image') @ check_finite(class_emb, 'class').T
  topk = np.argsort(-scores, axis=1, kind='stable')[:, :k]
  return float((topk == np.asarray(labels)[:, None]).any(axis=1).mean())


def mean_per_class_recall(image_emb: np.ndarray, class_emb: np.ndarray,
                          labels: np.ndarray) -> float:
  """Top-1 recall of each class present in `labels`, averaged over those classes (balanced
  accuracy, CLIP_benchmark's mean_per_class_recall); ties go to the lower class index."""
  pred = np.argmax(np.asarray(image_emb) @ np.asarray(class_emb).T, axis=1)
  labels = np.asarray(labels)
  return float(np.mean([(pred[labels == c] == c).mean() for c in np.unique(labels)]))
