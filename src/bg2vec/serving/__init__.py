"""`bg2vec serve`: an OpenAI-compatible embeddings server over the encoder, with a page for people.

A thin layer: request schemas (`schemas.py`), the dynamic batching queue (`batcher.py`), what the server asks of
the encoder (`model.py`), Prometheus metrics (`metrics.py`), the routes (`app.py`), the page (`page.html`) and
the process around them: bind, load, warm up, serve, drain on SIGTERM (`server.py`). No model logic lives here.
"""
