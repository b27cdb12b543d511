"""The `bg2vec merge` config: LoRA adapters of one base, stage and rank merged into one output folder."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..models.merging import METHODS
from .fields import check_choice, check_positive, setting


@dataclass
class MergeConfig:
    """Adapter merging (`bg2vec merge`): an average ("soup") or slerp of LoRA adapters trained on the same base."""

    model_name_or_path: str = setting("The base every adapter was trained on (as recorded in each).", "")
    adapters: list[str] = setting("Two or more adapter folders (bg2vec simcse or supervised outputs).", default_factory=list)
    output: str = setting("The merged output folder (loads alone with Bg2Vec.from_pretrained).", "")
    method: str = setting("average (a soup of the weight updates) or slerp (spherical interpolation).", "average")
    select_by: list[str] | None = setting("Eval tasks (MTEB names or local folders): greedy soup, adding each adapter (best first) only if their average score does not drop.", None)
    batch_size: int = setting("Texts per forward pass when scoring --select-by tasks.", 32)
    overwrite: bool = setting("Replace an existing output folder.", False)

    def __post_init__(self) -> None:
        for name, flag in (("model_name_or_path", "--model"), ("output", "--output")):
            if not getattr(self, name):
                raise ConfigError(name, "", "a path or model reference", fix=f"pass {flag}")
        if len(self.adapters) < 2:
            raise ConfigError("--adapters", self.adapters, "two or more adapter folders")
        check_choice("method", self.method, METHODS)
        check_positive("batch_size", self.batch_size)
