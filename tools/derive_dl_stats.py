#!/usr/bin/env python
"""Rebuild lesiondb/data/dl_stats.json: derived per-type statistics of a real DL_info.csv.

Only aggregates are written (size quantiles, location means/covariances per type and side,
histograms of studies per patient and lesions per study, sex counts, age quantiles); no row.

    python tools/derive_dl_stats.py [../shared/data/deeplesion/DL_info_available_merged.csv]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT = REPO.parent / "shared" / "data" / "deeplesion" / "DL_info_available_merged.csv"


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(REPO))
    from lesiondb.synth.dl_stats import STATS_PATH, derive_stats

    src = Path(argv[1]) if len(argv) > 1 else DEFAULT
    stats = derive_stats(src)
    STATS_PATH.parent.mkdir(parents=True, exist_ok=True)
    STATS_PATH.write_text(json.dumps(stats, indent=1) + "\n")
    print(f"wrote {STATS_PATH} from {src} ({stats['rows']} rows, {stats['patients']} patients)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
