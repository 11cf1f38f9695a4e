"""Fine-tuning DreamSim on NIGHTS or any triplet table: ``nights train``.

:func:`train` runs upstream's recipe by default (:class:`TrainConfig`), on one process or many
(``torchrun``, ``accelerate launch``), and writes a run folder: a checkpoint per epoch in the
release layout (``RUN/epoch_N``, ``RUN/best``: ``dreamsim(pretrained=True, cache_dir=RUN/best,
dreamsim_type=...)`` loads it), the validation 2AFC of each epoch as ``nights audit`` computes
it, the test 2AFC of the best one, a CSV log of every step and a one-file HTML report; a killed
run resumes where it stopped. :func:`export_merged` writes the best checkpoint as one merged
safetensors file, :func:`push_run` uploads it to the Hugging Face Hub with a model card.

Importing this package loads no torch: the names below load their module on first use.

Example::

    >>> from nights.train import TrainConfig
    >>> config = TrainConfig(variant="dino_vitb16", method="mlp").resolved()
    >>> config.epochs, config.batch_size, config.lr, config.betas
    (20, 512, 0.0003, [0.5, 0.999])
"""

from .._lazy import lazy_attributes

__getattr__, __dir__ = lazy_attributes(
    __name__,
    {
        "RECIPES": "config",
        "Rows": "config",
        "TrainConfig": "config",
        "load_config": "config",
        "TrainResult": "engine",
        "hinge_loss": "engine",
        "read_result": "engine",
        "train": "engine",
        "export_merged": "export",
        "push_run": "export",
        "model_card": "export",
    },
)

__all__ = [
    "RECIPES",
    "Rows",
    "TrainConfig",
    "TrainResult",
    "export_merged",
    "hinge_loss",
    "load_config",
    "model_card",
    "push_run",
    "read_result",
    "train",
]
