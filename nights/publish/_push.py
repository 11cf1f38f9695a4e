"""Uploading to the Hugging Face Hub: a Hub folder, or a FiftyOne dataset through FiftyOne."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import NightsError
from ..hub import DATA_DIR
from ._folder import validate_hub_folder


@dataclass(frozen=True)
class PushResult:
    """Where a push went: the repository's URL and the commit it made."""

    url: str
    commit: str | None


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
) -> PushResult:
    """Checks a folder written by :func:`write_hub_folder` and uploads it as a dataset.

    Args:
        folder: the Hub folder.
        repo_id: ``OWNER/NAME``; the dataset repository is created when missing
            (``private`` then applies; an existing one keeps its visibility).
        revision: a branch to commit to (created from the default branch when missing).
        token: default: ``HF_TOKEN``, else the token of ``hf auth login``.

    The folder is validated first (:func:`validate_hub_folder`, with checksums): nothing is
    uploaded from a folder that ``datasets`` would not read as it was written. The upload is
    ``huggingface_hub``'s ``upload_folder`` (resumable in its 2.x releases: run the same call
    again after an interruption); Parquet files of an earlier push that this folder does not
    have are deleted in the same commit, so the card's globs match only the new shards.

    Raises:
        NightsError: no token, a refused token, a name taken by a model repository, a folder
            that fails the checks, or the Hub's refusal, in one line each.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NightsError(f"{folder}: no such folder; write it with `nights publish` first")
    api, _ = hub_session(repo_id, token)
    validate_hub_folder(folder)
    ensure_dataset_repo(api, repo_id, private)
    try:
        if revision:
            api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
        from .. import __version__

        commit = api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=str(folder),
            revision=revision,
            commit_message=f"NIGHTS with its votes (nights {__version__})",
            delete_patterns=[f"{DATA_DIR}/*"],
        )
    except Exception as error:
        raise hub_error(api, f"uploading to {repo_id}", error) from None
    url = f"{api.endpoint}/datasets/{repo_id}" + (f"/tree/{revision}" if revision else "")
    return PushResult(url, getattr(commit, "oid", None))


def push_fiftyone(dataset, repo_id: str, *, private: bool = False) -> PushResult:
    """Shares a FiftyOne dataset (e.g. from :func:`nights.visualize.to_fiftyone`, groups, audit
    fields and saved views included) through FiftyOne's own Hub integration, so that
    ``fiftyone.utils.huggingface.load_from_hub(repo_id)`` opens it again.

    FiftyOne pushes into the namespace of the token's user: ``repo_id`` must be ``USER/NAME``
    for that user. The token comes from ``HF_TOKEN`` or ``hf auth login`` (FiftyOne's card
    upload reads it from there).

    Raises:
        NightsError: no token, another user's namespace, a name taken by a model repository,
            or the Hub's refusal, in one line each.
    """
    import fiftyone.utils.huggingface as fouh

    api, user = hub_session(repo_id, None)
    owner, name = repo_id.split("/")
    if owner != user:
        raise NightsError(
            f"FiftyOne pushes into the token's own namespace: use --push {user}/{name} "
            f"(not {repo_id})"
        )
    ensure_dataset_repo(api, repo_id, private)
    try:
        fouh.push_to_hub(
            dataset,
            name,
            private=private,
            exist_ok=True,
            description="NIGHTS triplets (groups ref/left/right) with votes and audit fields",
            tags=["nights", "perceptual-similarity", "2afc"],
        )
    except Exception as error:
        raise hub_error(api, f"pushing the FiftyOne dataset to {repo_id}", error) from None
    return PushResult(f"{api.endpoint}/datasets/{repo_id}", None)


def hub_session(repo_id: str, token: str | None):
    """An authenticated ``HfApi`` and the token's user name, or a one-line NightsError."""
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise NightsError(f"{repo_id!r} is not a repository name (expected OWNER/NAME)") from None
    if repo_id.count("/") != 1:
        raise NightsError(f"{repo_id!r}: give the repository as OWNER/NAME")
    token = token or get_token()
    if not token:
        raise NightsError(
            "no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token with write "
            "access), then run the same command again"
        )
    api = HfApi(token=token)
    try:
        user = api.whoami()["name"]
    except Exception as error:
        raise hub_error(api, "checking the token", error) from None
    return api, user


def ensure_dataset_repo(api, repo_id: str, private: bool) -> None:
    """Creates the dataset repository, or finds it; a name the Hub refuses because a model
    repository holds it is a NightsError saying so."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        api.create_repo(repo_id, repo_type="dataset", private=private)
        return
    except HfHubHTTPError as error:
        if error.response is None or error.response.status_code != 409:
            raise hub_error(api, f"creating the dataset {repo_id}", error) from None
    try:
        if api.repo_exists(repo_id, repo_type="dataset"):
            return
        taken_by_model = api.repo_exists(repo_id, repo_type="model")
    except Exception as error:
        raise hub_error(api, f"looking up {repo_id}", error) from None
    if taken_by_model:
        raise NightsError(
            f"{repo_id} is taken by a model repository on {api.endpoint}, and the Hub refuses "
            "a dataset of the same name: choose another NAME"
        )
    raise NightsError(f"{api.endpoint} refuses to create the dataset {repo_id} (HTTP 409)")


def hub_error(api, doing: str, error: Exception) -> NightsError:
    """One line: what failed, the HTTP status and the Hub's own message, and what to do."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(error, NightsError):
        return error
    if isinstance(error, OfflineModeIsEnabled):
        return NightsError(f"{doing}: HF_HUB_OFFLINE is set; unset it to reach {api.endpoint}")
    response = getattr(error, "response", None)
    if isinstance(error, HfHubHTTPError) and response is not None:
        status = response.status_code
        message = (getattr(error, "server_message", None) or "").strip().splitlines()
        detail = f": {message[0]}" if message else ""
        hint = (
            "; the token is missing or invalid: set HF_TOKEN or run `hf auth login`"
            if status == 401
            else "; the token has no write access to this namespace"
            if status == 403
            else ""
        )
        return NightsError(f"{doing} on {api.endpoint} failed (HTTP {status}){detail}{hint}")
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return NightsError(
        f"{doing} on {api.endpoint} failed ({type(error).__name__}: {first}); "
        "run the same command again to resume"
    )
