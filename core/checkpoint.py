"""Finding the CLAP checkpoint: a local directory, the hub cache, or one download; never a slow retry loop."""

from __future__ import annotations

import logging
from pathlib import Path

from core.errors import ModelLoadError

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 10.0  # seconds the first look at the hub may take
FILES = ["*.json", "*.txt", "*.model"]  # config, preprocessor and tokenizer files
WEIGHTS = ("*.safetensors", "*.bin")  # the first kind the repository has is downloaded, not both

FIX = (
    "How to fix it:\n"
    "  - on a machine with internet access, download it once: hf download {id}\n"
    "    (it goes to the Hugging Face cache; copy that, or the folder, to this machine);\n"
    "  - or point model.id in the config (or --model) at a local directory holding the checkpoint;\n"
    "  - once it is cached, HF_HUB_OFFLINE=1 keeps shira from looking online at all."
)


def locate(model_id: str, cache_dir: str | None = None, endpoint: str | None = None) -> str:
    """A local directory holding the checkpoint; downloads it (with progress bars) only when it isn't cached.

    Raises ModelLoadError at once, with what to do, when it is neither cached nor reachable.
    """
    path = Path(model_id).expanduser()
    if path.is_dir():
        return str(path)
    if model_id.startswith(("/", "./", "../", "~")):
        raise ModelLoadError(f"{model_id} is not a directory holding a CLAP checkpoint.\n" + FIX.format(id=model_id))
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return snapshot_download(model_id, cache_dir=cache_dir, local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        pass  # not cached (or not a hub id): look online below
    if constants.HF_HUB_OFFLINE:
        raise ModelLoadError(
            f"The CLAP model {model_id!r} is not downloaded yet, and HF_HUB_OFFLINE is set, so shira won't fetch it.\n"
            + FIX.format(id=model_id)
        )
    try:  # one quick look, no retries: an unreachable hub is reported now, not after half a minute
        info = HfApi(endpoint=endpoint).model_info(model_id, timeout=PROBE_TIMEOUT, files_metadata=False)
    except RepositoryNotFoundError as exc:
        raise ModelLoadError(
            f"There is no CLAP model {model_id!r} on the Hugging Face hub.\n" + FIX.format(id=model_id)
        ) from exc
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise ModelLoadError(_unreachable(model_id, exc)) from exc
    except Exception as exc:  # httpx's connection and timeout errors, whichever client the hub library uses
        raise ModelLoadError(_unreachable(model_id, exc)) from exc
    names = [s.rfilename for s in info.siblings or []]
    weights = next((p for p in WEIGHTS if any(Path(n).match(p) for n in names)), WEIGHTS[0])
    log.info("downloading the CLAP model %s from the Hugging Face hub (first run only)", model_id)
    try:
        return snapshot_download(
            model_id,
            cache_dir=cache_dir,
            endpoint=endpoint,
            allow_patterns=[*FILES, weights],
            etag_timeout=PROBE_TIMEOUT,
        )
    except Exception as exc:
        raise ModelLoadError(
            f"Downloading the CLAP model {model_id!r} failed: {exc}\n" + FIX.format(id=model_id)
        ) from exc


def _unreachable(model_id: str, exc: BaseException) -> str:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return (
        f"The CLAP model {model_id!r} is not downloaded yet, and the Hugging Face hub can't be reached ({reason}).\n"
        + FIX.format(id=model_id)
    )
