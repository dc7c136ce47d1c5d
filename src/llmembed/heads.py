"""Fusion heads: the only trained part. They take the frozen backbones' layer vectors and classify.

The co-occurrence head generalizes LLMEmbed's: every layer vector of every backbone is projected to
a common width (Linear + ReLU + Dropout), stacked into X [n, d], fused by co-occurrence pooling
P = X X^T with power normalization 2*sigmoid(sigma*P) - 1, concatenated with the mean of one
backbone's raw layer vectors, and classified by an MLP. Simple fusions (mean, max, concat of the
projected vectors) replace the co-occurrence step for ablations. The ``linear`` head is a
multinomial logistic regression on every standardized layer vector, concatenated: nothing is
projected, and :func:`llmembed.training.train_head` fits it in closed loop by L-BFGS (seconds).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .config import Settings
from .errors import ConfigError

FUSIONS = ("cooc", "mean", "max", "concat", "linear")


@dataclass
class HeadConfig(Settings):
    """Head architecture.

    fusion: "cooc" (the paper), or "mean" / "max" / "concat" of the projected vectors, or
        "linear": logistic regression on the standardized vectors concatenated (proj_dim, sigma,
        mean_of, hidden and dropout do not apply).
    proj_dim: common width of projected vectors (paper: 1024).
    project_same_width: project vectors already proj_dim wide too (paper: False, they go in raw).
    sigma: power-normalization scale.
    mean_of: index (or list of indices) of the backbone(s) whose raw layer vectors' mean joins
        the fused features (paper: the LLM, 0); None or [] leaves it out.
    standardize: z-score every input dimension with training statistics (not in the paper; it
        tames the huge activations of small decoders).
    double_softmax: the published code's softmax before CrossEntropyLoss (kept for ablations).
    stack: late fusion: each backbone's vectors are first scored by their own logistic
        regression, out of fold on the training texts, and the head fuses those scores
        (:mod:`llmembed.stacking`) instead of the vectors.
    balance: linear fusion with standardize only: each input's standardized block is scaled by
        sqrt(widest block / its width), so every input (backbone or lexical channel) carries the
        same total variance. Why: the L2 penalty treats every dimension alike, and a narrow,
        decisive block (the lexical channel's handful of class scores) is otherwise shrunk as
        hard as each of a backbone's hundreds of dimensions. Equivalent to a penalty per block.

    Raises:
        ConfigError: an unknown fusion, a non-positive proj_dim or a non-bool stack / balance.
    """

    table = "head setting"
    quiet_defaults = ("stack", "balance")

    fusion: str = "cooc"
    proj_dim: int = 1024
    project_same_width: bool = True
    sigma: float = 1.0
    mean_of: int | list[int] | None = 0
    hidden: list[int] = field(default_factory=lambda: [1024, 256])
    dropout: float = 0.5
    standardize: bool = True
    double_softmax: bool = False
    stack: bool = False
    balance: bool = False

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise ConfigError(f"fusion must be one of {FUSIONS}, not {self.fusion!r}")
        for name in ("stack", "balance"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, not {getattr(self, name)!r}")
        if self.proj_dim < 1:
            raise ConfigError("proj_dim must be positive")
        self.hidden = [int(h) for h in self.hidden]

    @property
    def mean_indices(self) -> list[int]:
        """mean_of as a list."""
        if self.mean_of is None:
            return []
        return [self.mean_of] if isinstance(self.mean_of, int) else list(self.mean_of)


def cooccurrence(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Power-normalized co-occurrence of stacked vectors x [b, n, d] -> [b, n*n]."""
    p = torch.bmm(x, x.transpose(1, 2))
    return (2 * torch.sigmoid(sigma * p) - 1).flatten(1)


class FusionHead(nn.Module):
    """Classifier over several backbones' outputs; shapes[i] = (n_vectors, width) of backbone i.

    Raises:
        ConfigError: ``config.mean_of`` names a backbone that is not there.
    """

    def __init__(
        self, shapes: list[tuple[int, int]], n_classes: int, config: HeadConfig | None = None
    ) -> None:
        super().__init__()
        self.config = config = config or HeadConfig()
        self.shapes = [(int(n), int(w)) for n, w in shapes]
        if config.fusion != "linear" and any(
            not 0 <= i < len(self.shapes) for i in config.mean_indices
        ):
            raise ConfigError(
                f"mean_of={config.mean_of} but there are {len(self.shapes)} backbones"
            )
        d = config.proj_dim
        self.projections = nn.ModuleList()
        linear = config.fusion == "linear"
        for n, w in [] if linear else self.shapes:
            self.projections.append(
                nn.ModuleList(
                    nn.Identity()
                    if (w == d and not config.project_same_width)
                    else nn.Sequential(nn.Linear(w, d), nn.ReLU(), nn.Dropout(config.dropout))
                    for _ in range(n)
                )
            )
        for i, (n, w) in enumerate(self.shapes):
            self.register_buffer(f"mean_{i}", torch.zeros(n, w))
            self.register_buffer(f"std_{i}", torch.ones(n, w))
        total = sum(n for n, _ in self.shapes)
        if linear:
            width = sum(n * w for n, w in self.shapes)
        else:
            width = {"cooc": total * total, "mean": d, "max": d, "concat": total * d}[config.fusion]
            width += sum(self.shapes[i][1] for i in config.mean_indices)
        layers: list[nn.Module] = []
        for h in [] if linear else config.hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(config.dropout)]
            width = h
        layers.append(nn.Linear(width, n_classes))
        self.mlp = nn.Sequential(*layers)
        self.n_classes = n_classes

    def set_standardization(self, features: list[torch.Tensor]) -> None:
        """Record per-dimension mean / std of the training features (used when standardize)."""
        self.set_moments(
            [x.mean(0) for x in features],
            [x.std(0) if len(x) > 1 else torch.ones_like(x[0]) for x in features],
        )

    def set_moments(self, means: list[torch.Tensor], stds: list[torch.Tensor]) -> None:
        """Record given per-dimension means / standard deviations, one [n_vectors, width] pair
        per backbone (for features streamed from disk, whose moments are summed block by
        block); a deviation under 1e-6 counts as 1e-6. With ``balance`` (linear fusion) each
        block's deviations are divided by its scale (see :class:`HeadConfig`): the scale is
        saved with the head and applied wherever it standardizes."""
        widths = [n * w for n, w in self.shapes]
        balance = self.config.balance and self.config.fusion == "linear"
        for i, (mean, std) in enumerate(zip(means, stds)):
            scale = (max(widths) / widths[i]) ** 0.5 if balance else 1.0
            getattr(self, f"mean_{i}").copy_(mean)
            getattr(self, f"std_{i}").copy_(std.clamp(min=1e-6) / scale)

    def fuse(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The features the MLP sees: fused projected vectors (+ raw mean of one backbone).

        Raises:
            ConfigError: not one feature array per backbone.
        """
        if len(features) != len(self.shapes):
            raise ConfigError(f"Head expects {len(self.shapes)} backbones, got {len(features)}")
        cfg = self.config
        if cfg.standardize:
            features = [
                (x - getattr(self, f"mean_{i}")) / getattr(self, f"std_{i}")
                for i, x in enumerate(features)
            ]
        if cfg.fusion == "linear":
            return torch.cat([x.flatten(1) for x in features], dim=1)
        projected = [
            proj(x[:, j])
            for x, projs in zip(features, self.projections)
            for j, proj in enumerate(projs)
        ]
        stacked = torch.stack(projected, dim=1)  # [b, total vectors, proj_dim]
        if cfg.fusion == "cooc":
            fused = cooccurrence(stacked, cfg.sigma)
        elif cfg.fusion == "mean":
            fused = stacked.mean(1)
        elif cfg.fusion == "max":
            fused = stacked.max(1).values
        else:
            fused = stacked.flatten(1)
        if cfg.mean_indices:
            fused = torch.cat([fused, *(features[i].mean(1) for i in cfg.mean_indices)], dim=1)
        return fused

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Logits [b, n_classes]."""
        return self.mlp(self.fuse(features))

    def loss(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """CrossEntropyLoss on logits (or on softmax outputs, as published, if double_softmax)."""
        if self.config.double_softmax:
            logits = torch.softmax(logits, dim=1)
        return nn.functional.cross_entropy(logits, target, weight=weight)

    def n_parameters(self) -> int:
        """Number of parameters (weights and biases; the standardization buffers excluded)."""
        return sum(p.numel() for p in self.parameters())
