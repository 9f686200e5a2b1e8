from __future__ import annotations

import numpy as np
from cityscapesscripts.helpers import labels as cs_labels

from monai_car.utils import cityscapes_classes as cc


def test_layout_constants():
    assert cc.NUM_CLASSES == 25 == cc.NUM_TRAIN_CLASSES + len(cc.COPY_IDS) + 1
    assert cc.VOID == cc.IGNORE_INDEX == 24
    assert cc.SWITCHABLE_TRAIN_IDS == (1, 11, 13, 8, 0)
    assert cc.COPY_IDS == (19, 20, 21, 22, 23)
    assert np.allclose(np.asarray(cc.FLIP_PROBABILITIES) * 17, [8, 7, 6, 5, 4])
    assert cc.SWITCHABLE_CLASS_IDS == (0, 1, 8, 11, 13, 19, 20, 21, 22, 23)
    assert cc.COPY_NAMES == ("sidewalk2", "person2", "car2", "vegetation2", "road2")
    assert len(cc.CLASS_NAMES) == cc.NUM_CLASSES and cc.CLASS_NAMES[-1] == "void"
    assert len(set(cc.CLASS_NAMES)) == cc.NUM_CLASSES


def test_names_follow_cityscapesscripts():
    # cityscapesscripts' own trainId -> label dictionary (the module builds its names from the label list)
    for train_id in range(19):
        assert cc.TRAIN_CLASS_NAMES[train_id] == cs_labels.trainId2label[train_id].name
    for original, copy in zip(cc.SWITCHABLE_TRAIN_IDS, cc.COPY_IDS):
        assert cc.CLASS_NAMES[copy] == cs_labels.trainId2label[original].name + "2"
    # a few written out by hand
    assert cc.CLASS_NAMES[0] == "road" and cc.CLASS_NAMES[13] == "car" and cc.CLASS_NAMES[18] == "bicycle"


def test_label_id_lookup_against_cityscapesscripts_table():
    table = cc.label_id_lookup()
    assert table.shape == (256,) and table.dtype == np.uint8
    for label_id, label in cs_labels.id2label.items():
        if label_id < 0:
            continue
        expected = label.trainId if label.trainId not in (255, -1) else cc.VOID
        assert table[label_id] == expected, label.name
    defined = {i for i in cs_labels.id2label if i >= 0}
    assert all(table[i] == cc.VOID for i in range(256) if i not in defined)
    # by hand: road 7 -> 0, car 26 -> 13, parking 9 (ignored in eval) -> void, unlabeled 0 -> void, bicycle 33 -> 18
    assert (table[7], table[26], table[9], table[0], table[33]) == (0, 13, 24, 24, 18)
    # every trainId is reached exactly once
    assert sorted(table[table != cc.VOID].tolist()) == list(range(19))


def test_train_id_lookup():
    table = cc.train_id_lookup()
    assert table[:19].tolist() == list(range(19))
    assert table[255] == cc.VOID and (table[19:] == cc.VOID).all()


def test_class_colors():
    colors = cc.class_colors()
    assert colors.shape == (25, 3) and colors.dtype == np.uint8
    assert tuple(colors[0]) == cs_labels.trainId2label[0].color
    for original, copy in zip(cc.SWITCHABLE_TRAIN_IDS, cc.COPY_IDS):
        assert tuple(colors[copy]) != tuple(colors[original])
