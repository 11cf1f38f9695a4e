"""How well a metric agrees with the human votes: scoring, statistics and the report.

:func:`run_audit` is the job in one call (what ``nights audit`` and
``scripts/audit_agreement.py`` run): it loads the split once per input size the metrics declare,
scores every triplet (:mod:`nights.audit.scoring`: each distinct image embedded once, every
embedding and distance cached by image content), shards the table across the processes of a
``torchrun`` or ``accelerate`` launch and merges their parts, computes the agreement statistics
(:mod:`nights.audit.stats`) and writes the outputs (:mod:`nights.audit.report`).

Example::

    >>> from nights.audit import run_audit
    >>> result = run_audit(["psnr", "ssim"], root=sample_root, out=scratch / "audit",
    ...                    cache=scratch / "scores.sqlite", num_workers=0, progress=False)
    >>> sorted(result.summary["metrics"]), sorted(result.paths)
    (['psnr', 'ssim'], ['candidates', 'html', 'json', 'parquet'])

From the shell: ``nights audit`` or ``python scripts/audit_agreement.py``.
"""

from .report import write_outputs, write_report
from .run import AuditResult, run_audit
from .scoring import TableImages, jnd_scores, pair_distances, score_table
from .stats import (
    LABEL_NOISE_MARGIN,
    agreement_table,
    audit_frame,
    bootstrap_interval,
    fit_vote_likelihood,
    iter_label_noise_ids,
    jnd_average_precision,
    summarize,
    two_afc,
)

__all__ = [
    "LABEL_NOISE_MARGIN",
    "AuditResult",
    "TableImages",
    "agreement_table",
    "audit_frame",
    "bootstrap_interval",
    "fit_vote_likelihood",
    "iter_label_noise_ids",
    "jnd_average_precision",
    "jnd_scores",
    "pair_distances",
    "run_audit",
    "score_table",
    "summarize",
    "two_afc",
    "write_outputs",
    "write_report",
]
