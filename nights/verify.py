"""Checks a NIGHTS folder: the CSV, and that every referenced image exists and decodes.

Example::

    >>> from nights.verify import verify_folder
    >>> report = verify_folder(sample_root, progress=False)
    >>> report.ok, report.rows
    (True, 120)
    >>> print(report.summary())
    CSV: .../nights/data.csv
    images under: .../nights
    rows: 120
    images checked: 360 (... MB)
      360 x 48x48 RGB
    OK
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ._progress import progress_bar
from .errors import SchemaError
from .images import inspect_image
from .table import Source, read_source_csv, resolve_source

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


@dataclass
class VerifyReport:
    """What :func:`verify_folder` found; ``ok`` is False when anything is wrong.

    ``warnings`` lists usable images that are read differently from what they hold (16-bit
    PNGs); they do not make ``ok`` False.
    """

    csv_path: str
    image_root: str
    rows: int = 0
    images_checked: int = 0
    schema_error: str | None = None
    problems: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)
    manifest_files: int = 0
    manifest_problems: list[str] = field(default_factory=list)
    image_kinds: dict[str, int] = field(default_factory=dict)
    total_bytes: int = 0
    unreferenced: int = 0

    @property
    def ok(self) -> bool:
        return self.schema_error is None and not self.problems and not self.manifest_problems

    def summary(self, limit: int = 50) -> str:
        lines = [
            f"CSV: {self.csv_path}",
            f"images under: {self.image_root}",
            f"rows: {self.rows}",
            f"images checked: {self.images_checked} ({self.total_bytes / 1e6:.1f} MB)",
        ]
        lines += [f"  {count} x {kind}" for kind, count in sorted(self.image_kinds.items())]
        if self.unreferenced:
            lines.append(f"image files not referenced by the CSV: {self.unreferenced}")
        if self.schema_error:
            lines.append(f"CSV problem: {self.schema_error}")
        if self.problems:
            lines.append(f"{len(self.problems)} bad image reference(s):")
            lines += [
                f"  id {p['id']}, {p['column']}: {p['path']}: {p['problem']}"
                for p in self.problems[:limit]
            ]
            if len(self.problems) > limit:
                lines.append(f"  ... and {len(self.problems) - limit} more (see --report)")
        if self.warnings:
            lines.append(f"{len(self.warnings)} image reference(s) with a warning:")
            lines += [
                f"  id {w['id']}, {w['column']}: {w['path']}: {w['warning']}"
                for w in self.warnings[:limit]
            ]
            if len(self.warnings) > limit:
                lines.append(f"  ... and {len(self.warnings) - limit} more (see --report)")
        if self.manifest_files:
            lines.append(
                f"download manifest: {self.manifest_files} files, "
                f"{len(self.manifest_problems)} problem(s)"
            )
            lines += [f"  {problem}" for problem in self.manifest_problems[:limit]]
        if not self.ok:
            lines.append("PROBLEMS FOUND")
        else:
            lines.append(f"OK, {len(self.warnings)} warning(s)" if self.warnings else "OK")
        return "\n".join(lines)


def verify_folder(
    root: str | os.PathLike | None = None,
    variant: str = "nights",
    *,
    decode: bool = True,
    checksums: bool = True,
    jobs: int = 8,
    progress: bool | None = None,
) -> VerifyReport:
    """Validates the CSV of ``variant`` under ``root`` and checks every image it references.

    When the folder came from ``nights download``, every file of its manifest is also checked
    against the recorded size and sha256.

    Args:
        decode: decode every pixel (finds truncated files); False reads headers only.
        checksums: compare sha256 with the download manifest (False: sizes only).
        jobs: threads reading images (PNG decoding releases the GIL).
    """
    from .download import STATE_DIR, check_manifest, read_manifest

    source: Source = resolve_source(root, variant)
    report = VerifyReport(str(source.csv_path), str(source.image_root))
    for download_root in (source.csv_path.parent, source.csv_path.parent.parent):
        if (download_root / STATE_DIR / "done").is_dir():
            report.manifest_files = len(read_manifest(download_root))
            report.manifest_problems = check_manifest(download_root, checksums)
            break
    try:
        frame = read_source_csv(source)
    except SchemaError as error:
        report.schema_error = str(error)
        return report
    report.rows = len(frame)
    columns = source.image_columns
    paths = sorted({p for column in columns for p in frame[f"{column}_path"]})
    with ThreadPoolExecutor(jobs) as pool:
        results = dict(
            zip(
                paths,
                pool.map(
                    lambda rel: inspect_image(source.image_root / rel, decode),
                    progress_bar(paths, progress=progress, desc="verifying images", unit="img"),
                ),
            )
        )
    report.images_checked = len(paths)
    report.image_kinds = dict(Counter(s.description for s in results.values() if s.description))
    report.total_bytes = sum(
        (source.image_root / rel).stat().st_size
        for rel, status in results.items()
        if status.problem is None
    )
    for row in frame.itertuples():
        for column in columns:
            relative = getattr(row, f"{column}_path")
            status = results[relative]
            place = {"id": int(row.id), "column": column, "path": str(source.image_root / relative)}
            if status.problem:
                report.problems.append({**place, "problem": status.problem})
            elif status.warning:
                report.warnings.append({**place, "warning": status.warning})
    if variant != "jnd":  # JND votes cover a subset of the release's images by design
        referenced = {str(source.image_root / rel) for rel in paths}
        report.unreferenced = sum(
            1
            for folder in ("ref", "distort")
            if (source.image_root / folder).is_dir()
            for path in (source.image_root / folder).rglob("*")
            if path.suffix.lower() in _IMAGE_SUFFIXES and str(path) not in referenced
        )
    return report
