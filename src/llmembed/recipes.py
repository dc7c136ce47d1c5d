"""Recipes: a TOML file naming the backbones and the head and training settings.

An optional ``[lexical]`` table (:class:`~llmembed.lexical.LexicalConfig`) adds the TF-IDF
lexical channel to the head's inputs; without it the channel is off.

Shipped recipes live in ``llmembed/recipes/*.toml`` (``paper``: the published configuration for a
GPU; ``cpu``: the offline default built from the model zoo). A path to any TOML file works too.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .backbones import BackboneSpec
from .errors import ConfigError
from .heads import HeadConfig
from .lexical import LexicalConfig
from .training import TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class Recipe:
    """Everything needed to build an LLMEmbed classifier, before training.

    ``lexical`` comes last so that positional construction (name, backbones, head, train,
    description) keeps working.
    """

    name: str
    backbones: list[BackboneSpec]
    head: HeadConfig = field(default_factory=HeadConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    description: str = ""
    lexical: LexicalConfig = field(default_factory=LexicalConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any], name: str = "custom") -> Recipe:
        """Build from a parsed recipe (the TOML file as a dict); ``name`` if it has none.

        Raises:
            ConfigError: an unknown section, no backbone, or a bad backbone / head / train /
                lexical table.
        """
        known = {"name", "description", "backbones", "head", "train", "lexical"}
        if set(data) - known:
            raise ConfigError(
                f"Unknown recipe section(s) {sorted(set(data) - known)}; known: {sorted(known)}"
            )
        if not data.get("backbones"):
            raise ConfigError("A recipe needs at least one [[backbones]] table")
        return cls(
            name=data.get("name", name),
            description=data.get("description", ""),
            backbones=[BackboneSpec.from_dict(b) for b in data["backbones"]],
            head=HeadConfig.from_dict(data.get("head", {})),
            train=TrainConfig.from_dict(data.get("train", {})),
            lexical=LexicalConfig.from_dict(data.get("lexical", {})),
        )

    def to_dict(self) -> dict[str, Any]:
        """The recipe as a plain dict (the TOML file's structure).

        The ``lexical`` table is left out while it holds the defaults (channel off), as a TOML
        file without ``[lexical]`` does: such recipes keep the dict they always had (saved
        models readable by older llmembed, benchmark config hashes unchanged).
        """
        data = {
            "name": self.name,
            "description": self.description,
            "backbones": [b.to_dict() for b in self.backbones],
            "head": self.head.to_dict(),
            "train": self.train.to_dict(),
        }
        if self.lexical != LexicalConfig():
            data["lexical"] = self.lexical.to_dict()
        return data


def available_recipes() -> list[str]:
    """Names of the recipes shipped with llmembed."""
    folder = resources.files("llmembed") / "recipes"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_recipe(name_or_path: str | os.PathLike) -> Recipe:
    """A shipped recipe by name, or a TOML file by path.

    Raises:
        ConfigError: no such recipe or file, invalid TOML, or a bad recipe.
    """
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"Recipe file {path} does not exist")
        text, name = path.read_text(), path.stem
    else:
        name = str(name_or_path)
        if name not in available_recipes():
            raise ConfigError(
                f"Unknown recipe {name!r}; shipped recipes: "
                f"{', '.join(available_recipes())}, or give a .toml path"
            )
        text = (resources.files("llmembed") / "recipes" / f"{name}.toml").read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"Recipe {name_or_path}: invalid TOML ({e})") from e
    return Recipe.from_dict(data, name=name)
