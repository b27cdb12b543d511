"""Corpus encoding (`bg2vec encode-corpus`, run top to bottom by recipes/encode_corpus.py): a corpus → a folder
of Parquet shards and a manifest, resumable and exactly once, on this machine or a Ray cluster;
`read_embeddings` reads the folder back. docs/corpus.md is the user's guide.

    sources.py   inputs (files, folders, globs) → rows (id, text, instruction); the duplicate-id check
    plan.py      the shard plan: fixed row ranges, the same for the same inputs
    choices.py   DTYPES and ENGINES (read by bg2vec.config)
    vectors.py   stored dtypes: float32, float16, int8 + scale, binary bits
    provenance.py  a digest of the model's files
    shards.py    the shard writer and manifest.json (the one piece of code that makes it exactly once)
    job.py       what a worker needs (a resolved plan) and the one function that embeds rows
    local.py     the local engine;  ray_engine.py  the Ray Data engine
    progress.py  progress lines and rates
    reading.py   read_embeddings: ids + a memory-mapped matrix
"""
