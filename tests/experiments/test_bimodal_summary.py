from __future__ import annotations

import json
import math
import os
import stat

import pytest

from experiments.bimodal_summary import (
    format_summary_markdown,
    iterations_to_settle,
    iterations_to_threshold,
    late_mean_offset,
    summarize_runs,
    write_json_atomic,
    write_text_atomic,
)


def _history(offsets, step=100):
    return [{"iteration": i * step, "calibration_offset": o} for i, o in enumerate(offsets)]


def test_threshold_settle_and_late_mean():
    hist = _history([0.3, 0.04, 0.2, 0.03, 0.01])
    assert iterations_to_threshold(hist) == 100
    assert iterations_to_settle(hist) == 300
    assert late_mean_offset(hist) == pytest.approx(0.02)  # iterations >= 300: (0.03 + 0.01) / 2
    assert late_mean_offset(hist, fraction=1.0) == pytest.approx(0.116)
    never = _history([0.3, 0.2, 0.06])
    assert iterations_to_threshold(never) is None
    assert iterations_to_settle(never) is None
    assert iterations_to_settle(_history([0.3, 0.01, 0.2])) is None
    assert iterations_to_threshold(_history([0.05])) == 0  # "at most 5 %"
    with pytest.raises(ValueError):
        iterations_to_threshold([])
    with pytest.raises(ValueError):
        late_mean_offset(hist, fraction=0.0)


def _result(pi, sigma, lam, seed, final, offsets, freqs=(0.9, 0.9), off=None):
    out = {
        "pi": pi,
        "sigma": sigma,
        "calibration_weight": lam,
        "seed": seed,
        "calibration_offset": final,
        "history": _history(offsets),
        "mode_frequency": {"0.0-0.4": freqs[0], "0.4-0.8": freqs[1]},
    }
    if off is not None:
        out["off_branch_fraction"] = {"0.0-0.4": off[0], "0.4-0.8": off[1]}
    return out


def test_summarize_runs_hand_computed():
    results = [
        _result(0.9, 0.02, 1.0, 0, 0.01, [0.2, 0.04, 0.01], (0.91, 0.89), (0.02, 0.04)),
        _result(0.9, 0.02, 1.0, 1, 0.03, [0.2, 0.1, 0.03], (0.95, 0.89), (0.06, 0.08)),
        _result(0.9, 0.02, 0.0, 1, 0.01, [0.2, 0.2, 0.01]),
        _result(0.9, 0.02, 0.0, 0, 0.02, [0.2, 0.2, 0.2]),
    ]
    summary = summarize_runs(results)
    rows = {r["calibration_weight"]: r for r in summary["rows"]}
    r1, r0 = rows[1.0], rows[0.0]
    assert r1["final_offset_mean"] == pytest.approx(0.02)
    assert r1["final_offset_std"] == pytest.approx(math.sqrt(2) * 0.01)  # sample std of (0.01, 0.03)
    assert r1["iterations_to_5pct"] == [100, 200]
    assert r1["iterations_to_5pct_mean"] == pytest.approx(150)
    assert r1["runs_settled_5pct"] == 2
    assert r0["seeds"] == [0, 1]  # sorted by seed
    assert r0["final_offsets"] == [0.02, 0.01]
    assert r0["iterations_to_5pct"] == [None, 200]
    assert r0["runs_reaching_5pct"] == 1
    (comp,) = summary["comparison"]
    assert comp["final_offset_lambda1"] == pytest.approx(0.02)
    assert comp["final_offset_lambda0"] == pytest.approx(0.015)
    assert comp["lambda1_lower"] is False
    assert comp["paired_seeds"] == 2 and comp["paired_seeds_lambda1_lower"] == 1  # seed 0: 0.01 < 0.02

    assert r1["mode_frequency_mean"] == pytest.approx({"0.0-0.4": 0.93, "0.4-0.8": 0.89})
    assert r1["max_region_offset"] == pytest.approx(0.03)
    assert r1["off_branch_fraction_mean"] == pytest.approx(0.05)  # mean of the runs' region means 0.03, 0.07
    assert r0["off_branch_fraction_mean"] is None  # not reported by these runs

    md = format_summary_markdown(summary)
    assert "| 0.9 | 0.02 | 1 | 0.020 ± 0.014 | 0.930 / 0.890 | 150 (2/2) |" in md
    assert "| 0.9 | 0.02 | 0 | 0.015 ± 0.007 | 0.900 / 0.900 | 200 (1/2) |" in md
    assert "| 5.0 % |" in md
    assert "| 0.9 | 0.02 | 0.020 | 0.015 | no | 1/2 |" in md


def test_summarize_runs_validates():
    with pytest.raises(ValueError):
        summarize_runs([])
    with pytest.raises(ValueError, match="history"):
        summarize_runs([{"pi": 0.5, "sigma": 0.01, "calibration_weight": 1, "seed": 0, "calibration_offset": 0.1}])
    with pytest.raises(ValueError):
        format_summary_markdown({"rows": []})


def test_atomic_writes(tmp_path):
    path = tmp_path / "a.json"
    write_json_atomic({"x": 1}, path)
    assert json.loads(path.read_text()) == {"x": 1}
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's owner-only 0o600
    with pytest.raises(ValueError):  # NaN is not valid JSON: the old file must survive untouched
        write_json_atomic({"x": float("nan")}, path)
    assert json.loads(path.read_text()) == {"x": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]  # no temp file left behind
    with pytest.raises(ValueError, match="does not exist"):
        write_text_atomic("hi", tmp_path / "missing" / "b.txt")
