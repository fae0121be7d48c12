"""Where a project's workspace may live.

Local runs read and write their project's workspace, so whoever sets
``workspace_root`` chooses what a run may touch. A workspace must therefore be
a directory strictly below the operator's ``EXECUTION_WORKSPACES_ROOT``, after
symlinks are resolved: ``/``, the service's own checkout (its code, its SQLite
database and ``var/``) and anything outside the root are refused, whoever asks.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError


def workspaces_root() -> Path:
    """The configured root, resolved (it need not exist yet)."""
    return Path(settings.EXECUTION_WORKSPACES_ROOT).resolve()


def _is_within(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def validate_workspace_root(value: str) -> str:
    """Return ``value`` normalised, or raise ``ValidationError`` saying why not.

    Contract: an absolute path to an existing directory which, symlinks
    followed, lies strictly inside ``EXECUTION_WORKSPACES_ROOT`` and neither
    is nor contains the service's checkout. The stored value is the resolved
    path, so a symlink swapped later cannot move the workspace elsewhere.
    """
    if not value or not os.path.isabs(value):
        raise ValidationError("Must be an absolute path.", code="not_absolute")
    if "\x00" in value:
        raise ValidationError("Must be a path.", code="invalid")
    resolved = Path(value).resolve()
    root = workspaces_root()
    repository = Path(settings.BASE_DIR).resolve()
    var_dir = Path(settings.VAR_DIR).resolve()
    # The checkout holds the code and secrets' consumers; var/ the database.
    # Only var/'s subdirectories (where the default root lives) are usable.
    inside_checkout = _is_within(resolved, repository) and not _is_within(resolved, var_dir)
    if _is_within(repository, resolved) or _is_within(var_dir, resolved) or inside_checkout:
        raise ValidationError(
            "Must not be in the service's own checkout (outside var/) or a parent of it.",
            code="workspace_forbidden",
        )
    if resolved == root or not _is_within(resolved, root):
        raise ValidationError(
            f"Must be a directory inside {root} (EXECUTION_WORKSPACES_ROOT).",
            code="outside_workspaces_root",
        )
    if not resolved.is_dir():
        raise ValidationError("Must be an existing directory.", code="not_a_directory")
    return str(resolved)
