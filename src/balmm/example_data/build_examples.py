"""Regenerate the bundled example data from the public source files.

Usage (from the repository root)::

    .venv/bin/python example_data/build_examples.py [--shared ../shared/data]

Writes ``rosmap.h5mu`` and the small ``rosmap_small_*.csv`` NAME=PATH example next to this
script. Sources and licences: README.md in this folder. Only MIT-compatible data are bundled.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from balmm.data.dataset import LABEL, SPLIT, MultiOmicsData
from balmm.data.io import normalise_labels, write_h5mu
from balmm.data.layouts import read_mogonet

HERE = Path(__file__).resolve().parent

ROSMAP_CLASSES = {"0": "Normal control", "1": "Alzheimer's disease"}


def build_rosmap(folder: Path) -> MultiOmicsData:
    raw = read_mogonet(folder, id_prefix="rosmap_")
    labels, _ = normalise_labels(raw.annotations["label"])
    obs = pd.DataFrame(index=raw.annotations.index)
    obs[LABEL] = labels
    obs[SPLIT] = raw.split
    return MultiOmicsData(
        mods=raw.mods,
        obs=obs,
        label_key="labels_tr.csv/labels_te.csv (0 = Normal control, 1 = Alzheimer's disease)",
        label_mapping=dict(ROSMAP_CLASSES),
        split_source="given (MOGONET split: *_tr / *_te files)",
        source="ROSMAP, MOGONET preprocessing (github.com/txWang/MOGONET, MIT)",
        notes=["sample IDs rosmap_tr_NNN / rosmap_te_NNN are row positions in the MOGONET files"],
        uns={"class_descriptions": ROSMAP_CLASSES},
    )


def build_small_csv(data: MultiOmicsData, out: Path) -> None:
    """A nutrimouse-sized slice of ROSMAP (40 samples, 2 x 20 features) in NAME=PATH form."""
    train = data.obs.index[data.obs[SPLIT] == "train"][:28]
    test = data.obs.index[data.obs[SPLIT] == "test"][:12]
    ids = train.append(test)
    for name in ("mrna", "mirna"):
        m = data.mods[name][ids, :20]
        df = pd.DataFrame(m.X, index=pd.Index(ids, name="sample"), columns=m.var_names)
        df.to_csv(out / f"rosmap_small_{name}.csv", float_format="%.6g")
    lab = data.obs.loc[ids, [LABEL, SPLIT]].rename_axis("sample")
    lab.to_csv(out / "rosmap_small_labels.csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shared", type=Path, default=HERE.parents[2].parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    rosmap = build_rosmap(args.shared / "mogonet_rosmap")
    write_h5mu(rosmap, args.out / "rosmap.h5mu")
    build_small_csv(rosmap, args.out)
    for p in sorted(args.out.glob("*.h5mu")) + sorted(args.out.glob("*.csv")):
        print(f"{p.name}\t{p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
