"""Length-sorted batches under a row cap and a token budget, so padding stays small.

Texts are sorted longest first (a batch too large for memory fails at once, not at the end) and cut into
batches greedily. A batch takes the next text while it has fewer than `batch_size` rows, its padded size
(rows × its longest text) stays within `max_batch_tokens`, and the padding that text adds does not make the
batch more than a quarter padding (ignored below `SMALL_WASTE` padded tokens, where another forward would cost
more than the padding). So one long text gets a batch of its own instead of padding 31 short ones to its length.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import ConfigError

MAX_PADDING = 0.25  # most of a batch's padded tokens that may be padding
SMALL_WASTE = 256  # padding below this many tokens never starts a new batch


def plan_batches(lengths: Sequence[int], batch_size: int, max_batch_tokens: int | None = None) -> list[list[int]]:
    """Indices into `lengths` grouped into batches, longest texts first; every index appears once.

    >>> plan_batches([3, 500, 40, 41], batch_size=32)
    [[1], [3, 2, 0]]
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError("batch_size", batch_size, "a positive whole number")
    if max_batch_tokens is not None and (
        not isinstance(max_batch_tokens, int) or isinstance(max_batch_tokens, bool) or max_batch_tokens < 1
    ):
        raise ConfigError("max_batch_tokens", max_batch_tokens, "a positive whole number of tokens, or None")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    batch: list[int] = []
    real = 0  # tokens of the batch's texts, without padding
    for index in order:
        length = lengths[index]
        if batch:
            longest = lengths[batch[0]]
            padded = (len(batch) + 1) * longest
            waste = padded - real - length
            full = len(batch) == batch_size or (max_batch_tokens is not None and padded > max_batch_tokens)
            if full or (waste > SMALL_WASTE and waste > MAX_PADDING * padded):
                batches.append(batch)
                batch, real = [], 0
        batch.append(index)
        real += length
    if batch:
        batches.append(batch)
    return batches
