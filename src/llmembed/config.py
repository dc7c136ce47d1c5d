"""What every configuration dataclass shares: a recipe table in, a plain dict out.

:class:`~llmembed.backbones.BackboneSpec`, :class:`~llmembed.heads.HeadConfig` and
:class:`~llmembed.training.TrainConfig` are dataclasses read from a recipe's TOML tables; an
unknown key there is a typo that must not pass silently.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, ClassVar, TypeVar

from .errors import ConfigError

T = TypeVar("T", bound="Settings")

# The shipped recipe that LLMEmbedClassifier, `llmembed train` and the benchmark harness's "ours"
# use when none is named: EmbeddingGemma-300M and all-mpnet-base-v2 each scored by their own
# logistic regression, plus the TF-IDF lexical channel, stacked (docs/layer-choice.md).
DEFAULT_RECIPE = "cpu-stack"


def is_int(value: Any) -> bool:
    """An integer and not a boolean (JSON / TOML ``true`` is no count)."""
    return isinstance(value, int) and not isinstance(value, bool)


class Settings:
    """Mixin for configuration dataclasses: ``from_dict`` refuses unknown keys, ``to_dict``."""

    table: ClassVar[str] = "setting"  # what an error message calls one key, e.g. "head setting"
    # Settings added after the first release: left out of to_dict while at their default, so
    # the dicts (and the cache fingerprints, saved models and benchmark records keyed by them)
    # of configurations that do not use them stay what they were.
    quiet_defaults: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        """Build from a recipe table.

        Raises:
            ConfigError: an unknown key or a bad value.
        """
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"Unknown {cls.table}(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (the recipe table they came from), without the
        :attr:`quiet_defaults` that are at their default value."""
        out = asdict(self)  # type: ignore[call-overload]
        defaults = {f.name: f for f in fields(self)}  # type: ignore[arg-type]
        for name in self.quiet_defaults:
            f = defaults[name]
            default = f.default_factory() if callable(f.default_factory) else f.default
            if out[name] == default:
                del out[name]
        return out
