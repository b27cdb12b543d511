"""The choice lists of corpus encoding, kept free of heavy imports so that `bg2vec.config` can read them."""

DTYPES = ("float32", "float16", "int8", "binary")  # how vectors are stored (see vectors.py)
ENGINES = ("local", "ray")  # where the model runs: this machine, or a Ray Data actor pool
