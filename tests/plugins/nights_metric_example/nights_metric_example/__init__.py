"""A nights metric plugin: the mean absolute difference of two images."""

from nights.metrics import pair_metric


def mean_absolute_difference(a, b):
    return (a - b).abs().mean(dim=(1, 2, 3))


l1 = pair_metric(mean_absolute_difference, name="example_l1", input_size=32)


def scaled_l1(argument, device=None):
    """``example_scaled:SIZE``: the same difference with the images at SIZE px (default 32)."""
    size = int(argument or 32)
    return pair_metric(
        mean_absolute_difference, name=f"example_scaled:{size}", input_size=size, device=device
    )


def not_a_metric(argument, device=None):
    return "a string"


def raises(argument, device=None):
    raise RuntimeError("weights not found\n(looked in ~/.cache/example)")
