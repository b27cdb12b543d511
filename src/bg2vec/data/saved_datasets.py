"""The one loader of datasets written by `datasets`' `save_to_disk` (e.g. by `bg2vec prepare`).

Every failure is one `ConfigError` naming the setting that gave the path, and the first line of the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, DataError, first_line

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

ALLOWED = "a folder written by datasets' save_to_disk"


def load_saved(path: str | Path, setting: str) -> Dataset | DatasetDict:
    """The dataset (or dict of splits) saved at `path`, as it was saved."""
    from datasets import load_from_disk  # datasets loads only for callers that read a saved dataset

    if not Path(path).exists():
        raise ConfigError(setting, str(path), ALLOWED, fix="check the path")
    try:
        return load_from_disk(str(path))
    except (OSError, ValueError) as exc:
        raise ConfigError(setting, str(path), ALLOWED, fix=first_line(exc)) from None


def load_saved_splits(path: str | Path, setting: str) -> DatasetDict:
    """The splits saved at `path`: a single saved dataset becomes the train split; a train split is required."""
    from datasets import Dataset, DatasetDict

    loaded = load_saved(path, setting)
    if isinstance(loaded, Dataset):
        loaded = DatasetDict({"train": loaded})
    if "train" not in loaded:
        raise DataError(f"{setting}={str(path)!r} has splits {list(loaded)}; expected a 'train' split")
    return loaded
