"""The dataset card (``README.md``) of a Hub folder, generated from its ``provenance.json``."""

from __future__ import annotations

from ..hub import DATA_DIR, HUB_PREFIX

REPO_PLACEHOLDER = "OWNER/NAME"
BIBTEX = """@inproceedings{fu2023dreamsim,
  title     = {DreamSim: Learning New Dimensions of Human Visual Similarity using Synthetic Data},
  author    = {Fu, Stephanie and Tamir, Netanel and Sundaram, Shobhita and Chai, Lucy and
               Zhang, Richard and Dekel, Tali and Isola, Phillip},
  booktitle = {Advances in Neural Information Processing Systems},
  volume    = {36},
  year      = {2023},
  eprint    = {2306.09344},
  archivePrefix = {arXiv}
}"""
COLUMN_MEANINGS = {
    "id": "id, as in the source CSV",
    "ref": "the reference image (original PNG bytes)",
    "left": "the first distortion (original PNG bytes)",
    "right": "the second distortion (original PNG bytes)",
    "distort": "the distortion shown after the reference (original PNG bytes)",
    "left_vote": "share of votes for the left image as closer to the reference",
    "right_vote": "share of votes for the right image (p in the 2AFC score)",
    "votes": "number of votes (JND: answers about this pair)",
    "split": "train, val or test, as released (empty in sets without splits)",
    "is_imagenet": "the category comes from ImageNet",
    "prompt": "the category in the prompt 'An image of a <category>'",
    "ref_path": "path of the reference in the release, e.g. ref/000/006.png",
    "left_path": "path of the left image in the release (sides as released, sometimes swapped)",
    "right_path": "path of the right image in the release (not always *_1.png)",
    "distort_path": "path of the distortion in the release",
    "same": "share of 'same' answers (the two images looked identical)",
}
CONFIG_MEANINGS = {
    "nights": "the 20,019-triplet release with unanimous votes (upstream's NIGHTS)",
    "unfiltered": "the unfiltered set: every generated triplet with its votes, unanimous or not",
    "jnd": "just-noticeable-difference votes: reference vs. one distortion, same or different",
}


def render_card(provenance: dict, repo_id: str | None = None) -> str:
    """The dataset card of a Hub folder: YAML (configs with ``data_files``, ``dataset_info``
    with features and counts, license) and the text a reader needs, from ``provenance``.

    Args:
        provenance: the content of the folder's ``provenance.json``.
        repo_id: ``OWNER/NAME`` for the loading examples (default: a placeholder).
    """
    repo = repo_id or REPO_PLACEHOLDER
    configs = provenance["configs"]
    sections = [
        _about(),
        _configs_table(configs, provenance["default_config"]),
        _loading(repo, configs, provenance["default_config"]),
        _upstream_view(repo, configs, provenance["default_config"]),
        _columns(configs),
        _labels(),
        _provenance_text(provenance),
        _license(),
        "## Citation\n\n```bibtex\n" + BIBTEX + "\n```\n",
    ]
    return "---\n" + _yaml(provenance) + "---\n\n" + "\n".join(sections)


def _yaml(provenance: dict) -> str:
    from datasets import DatasetInfo, Features, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCardData

    configs = provenance["configs"]
    total = sum(config["rows"] for config in configs.values())
    data = DatasetCardData(
        pretty_name="NIGHTS (Novel Image Generations with Human-Tested Similarities)",
        license="unknown",
        size_categories=_size_category(total),
        tags=["perceptual-similarity", "image-similarity", "human-judgments", "2afc", "synthetic"],
    )
    MetadataConfigs(
        {
            name: {
                "data_files": [
                    {"split": split, "path": f"{DATA_DIR}/{name}/{split}-*.parquet"}
                    for split in config["splits"]
                ],
                **(
                    {"default": True}
                    if name == provenance["default_config"] and name != "default"
                    else {}
                ),
            }
            for name, config in configs.items()
        }
    ).to_dataset_card_data(data)
    infos = {}
    for name, config in configs.items():
        splits = SplitDict()
        for split, info in config["splits"].items():
            size = sum(entry["bytes"] for entry in info["files"])
            splits.add(SplitInfo(name=split, num_examples=info["rows"], num_bytes=size))
        size = sum(split.num_bytes for split in splits.values())
        infos[name] = DatasetInfo(
            features=Features.from_dict(config["features"]),
            splits=splits,
            download_size=size,
            dataset_size=size,
        )
    DatasetInfosDict(infos).to_dataset_card_data(data)
    return data.to_yaml() + "\n"


def _size_category(rows: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if rows < limit:
            return name
    return "100K<n<1M" if rows < 1_000_000 else "1M<n<10M"


def _about() -> str:
    return """# NIGHTS: Novel Image Generations with Human-Tested Similarities

NIGHTS is the human perceptual-similarity dataset of the DreamSim paper (Fu, Tamir, Sundaram,
Chai, Zhang, Dekel, Isola; NeurIPS 2023, [arXiv:2306.09344](https://arxiv.org/abs/2306.09344)).
Each triplet is a reference image and two distortions of it, all three generated by Stable
Diffusion 2.1 from the prompt "An image of a <category>" with different seeds (categories from
ImageNet, CIFAR-10, CIFAR-100, Oxford-102 Flowers, Food-101 and SUN397). People answered
two-alternative forced-choice questions: which of the two distortions is more similar to the
reference? Votes were collected in rounds, and only triplets whose votes stayed unanimous were
kept in the 20,019-triplet release; the unfiltered set holds every generated triplet with its
votes, and the just-noticeable-difference (JND) votes say whether a reference and one
distortion, shown in quick succession, looked the same.

This copy keeps what other copies drop: the vote shares and counts, `is_imagenet`, the image
paths of the release, the unfiltered set and the JND votes, with the PNG files' bytes. It was
written by the `nights` package from the files listed under Provenance, with their sha256.
"""


def _configs_table(configs: dict, default: str) -> str:
    lines = [
        "## Configs and counts\n",
        "| config | content | split | rows | votes >= 6 |",
        "| --- | --- | --- | ---: | ---: |",
    ]
    for name, config in configs.items():
        what = CONFIG_MEANINGS[config["variant"]]
        if config["kind"] == "split_set":
            what = f"a split set of the {config['variant']} table (its filters: Provenance)"
        if name == default:
            what += "; the default config"
        for split, info in config["splits"].items():
            kept = f"{info['votes_ge_6']:,}" if "votes_ge_6" in info else "-"
            lines.append(f"| `{name}` | {what} | `{split}` | {info['rows']:,} | {kept} |")
            what = ""
        kept_per_split = [info.get("votes_ge_6") for info in config["splits"].values()]
        kept = f"{sum(kept_per_split):,}" if None not in kept_per_split else "-"
        lines.append(f"| `{name}` | | all | {config['rows']:,} | {kept} |")
    lines.append(
        "\nSets without a `split` column (the unfiltered set as released, the JND votes) are "
        "one split named `train`, the Hub's name for a single split; their `split` column stays "
        "empty. Within a split, rows keep the order of the source."
    )
    return "\n".join(lines) + "\n"


def _loading(repo: str, configs: dict, default: str) -> str:
    others = "\n".join(
        f'{name} = load_dataset("{repo}", "{name}")' for name in configs if name != default
    )
    nights_root = HUB_PREFIX + repo
    return f"""## Loading

```python
from datasets import load_dataset

nights = load_dataset("{repo}")  # config {default}: a DatasetDict of its splits
{others}
stream = load_dataset("{repo}", streaming=True)  # no download up front
row = nights["test"][0]
row["ref"], row["left"], row["right"]  # PIL images
row["left_vote"], row["right_vote"], row["votes"]
```

With the `nights` package, the same rows as from the release folder,
cached under `NIGHTS_HOME` after the first call:

```python
from nights import load_nights

test = load_nights(split="test", root="{nights_root}")  # votes >= 6, as upstream
```
"""


def _upstream_view(repo: str, configs: dict, default: str) -> str:
    holds = (
        "The release configs hold every row of their CSV"
        if any(config["kind"] == "release" for config in configs.values())
        else "Each split set holds the rows its filters kept"
    )
    return f"""## Upstream's view: `votes >= 6`

Upstream's loader keeps only the triplets with at least 6 votes, and the published 2AFC scores
on the test split use that view. {holds}; the table above gives both counts. Reproduce
upstream's view with a filter:

```python
test = load_dataset("{repo}", split="test").filter(lambda v: v >= 6, input_columns="votes")
```

or with `nights.load_nights(split="test", root=...)`, whose default is `min_votes=6`
(`min_votes=None` keeps every row). `test_imagenet` and `test_no_imagenet` are the test rows
with and without `is_imagenet`.
"""


def _columns(configs: dict) -> str:
    parts = ["## Columns\n"]
    for name, config in configs.items():
        parts.append(f"`{name}`:\n")
        parts.append("| column | type | meaning |\n| --- | --- | --- |")
        for column, feature in config["features"].items():
            kind = "image" if feature.get("_type") == "Image" else feature.get("dtype", "?")
            meaning = COLUMN_MEANINGS.get(column, "kept from the source CSV as text")
            parts.append(f"| `{column}` | {kind} | {meaning} |")
        parts.append("")
    parts.append(
        "Images are `datasets` Image features: `{bytes, path}` with the PNG file's bytes "
        "unchanged and its path relative to the release; `Image(decode=False)` gives the bytes."
    )
    return "\n".join(parts) + "\n"


def _labels() -> str:
    return """## Labels and the 2AFC score

As in BAPPS/LPIPS, `p = right_vote` is the share of people who chose the right image as closer
to the reference (`left_vote = 1 - p`). For a metric with distances `d0 = d(ref, left)` and
`d1 = d(ref, right)`, the 2AFC score is the mean over triplets of
`(d0 < d1) * (1 - p) + (d1 < d0) * p + (d0 == d1) * 0.5`. The paths are those of the release:
upstream swapped the sides of some triplets, so `right_path` is not always `*_1.png`.
"""


def _provenance_text(provenance: dict) -> str:
    lines = [
        "## Provenance\n",
        f"Written by `nights` {provenance['nights_version']} on {provenance['created']} "
        "(`provenance.json` in this repository holds the same facts, with the sha256 of every "
        "Parquet file).\n",
    ]
    for name, config in provenance["configs"].items():
        source = config["source"]
        lines.append(f"- `{name}` ({config['kind'].replace('_', ' ')}, {config['variant']}):")
        lines.append(f"  - source: `{source.get('file')}`, sha256 `{source.get('sha256')}`")
        if config.get("split_csv"):
            own = config["split_csv"]
            lines.append(f"  - split set's own `{own['file']}`: sha256 `{own['sha256']}`")
        steps = [_describe_filter(step) for step in config.get("filters", [])]
        steps = [step for step in steps if step]
        lines.append(
            "  - filters applied: " + ("; then ".join(steps) if steps else "none (every row)")
        )
        if config.get("note"):
            lines.append(f"  - note: {config['note']}")
        lines.append(f"  - images: {config['images']} PNG bytes")
    return "\n".join(lines) + "\n"


def _describe_filter(step: dict) -> str:
    """One recorded filter step in words; steps that keep every row give ''."""
    parts = []
    for key, value in step.items():
        if value is None or (key == "split" and value == "all"):
            continue
        if isinstance(value, list):
            value = f"{len(value)} id(s)" if len(value) > 10 else ", ".join(map(str, value))
        parts.append(f"`{key}` = {value}")
    return ", ".join(parts)


def _license() -> str:
    return """## License

What is known: the release was published by the DreamSim authors at
`https://data.csail.mit.edu/nights/`; their code repository
([ssundaram21/dreamsim](https://github.com/ssundaram21/dreamsim)) is under the MIT License
(copyright 2023 Shobhita Sundaram), whose text speaks of "the Software". The images were
generated with Stable Diffusion 2.1, whose weights are distributed under the CreativeML Open
RAIL++-M license. What is not known: neither the repository's README nor the dataset's README
states a license for the images and the votes, so this card says `license: unknown`. Ask the
authors before a use that needs a license.
"""
