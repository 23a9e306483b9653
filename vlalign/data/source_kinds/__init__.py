"""One class per source kind (base.Kind); data/spec.py's KIND_CLASSES names them."""
