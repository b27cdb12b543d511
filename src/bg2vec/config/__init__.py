"""Run configurations: one typed dataclass per command (every default and its help text), and the loader.

Every default lives here. Presets in `configs/`, config files and command-line flags only override; `bg2vec.cli`
generates the flags of most commands from these fields. Importing this package loads neither torch nor the encoder.

    training.py   TrainingSettings, DataSettings, MatryoshkaSettings; MNTPConfig, SimCSEConfig, SupervisedConfig
    prepare.py    PrepareConfig          encode.py   EncodeConfig        corpus.py   EncodeCorpusConfig
    mining.py     MineNegativesConfig    evaluate.py EvaluateConfig
    serve.py      ServeConfig            merge.py    MergeConfig
    export.py     ExportConfig
    loading.py    JSON files and `--key value` strings → a config (types checked, unknown keys named)
    fields.py     `setting(help, default)` and the checks every config uses
"""

from .corpus import EncodeCorpusConfig
from .encode import EncodeConfig
from .evaluate import EvaluateConfig
from .export import ExportConfig
from .fields import TORCH_DTYPES, setting
from .loading import CONFIG_FORMAT_VERSION, KEY_ALIASES, config_from_dict, config_help, config_to_dict, load_config
from .merge import MergeConfig
from .mining import MineNegativesConfig
from .prepare import PrepareConfig
from .serve import ServeConfig
from .training import DataSettings, MatryoshkaSettings, MNTPConfig, SimCSEConfig, SupervisedConfig, TrainingSettings

__all__ = [
    "CONFIG_FORMAT_VERSION",
    "DataSettings",
    "EncodeConfig",
    "EncodeCorpusConfig",
    "EvaluateConfig",
    "ExportConfig",
    "KEY_ALIASES",
    "MNTPConfig",
    "MatryoshkaSettings",
    "MergeConfig",
    "MineNegativesConfig",
    "PrepareConfig",
    "ServeConfig",
    "SimCSEConfig",
    "SupervisedConfig",
    "TORCH_DTYPES",
    "TrainingSettings",
    "config_from_dict",
    "config_help",
    "config_to_dict",
    "load_config",
    "setting",
]
