from __future__ import annotations

import pytest
from ignite.engine import Engine, Events

from monai_car.handlers import StagedOutputDir


def _engine(stage: StagedOutputDir, fail_at: int | None = None) -> Engine:
    def step(engine, batch):
        if batch == fail_at:
            raise RuntimeError(f"case {batch} is corrupt")
        (stage.path / f"case_{batch}.txt").write_text(str(batch))

    engine = Engine(step)
    engine.add_event_handler(Events.COMPLETED, lambda e: (stage.path / "metrics.json").write_text("{}"))
    stage.attach(engine)  # after the writers: publishes last
    return engine


def test_outputs_are_published_together_and_replace_the_previous_run(tmp_path):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "case_9.txt").write_text("old run")
    stage = StagedOutputDir(out)
    assert stage.path.parent == tmp_path and stage.path.name.startswith(".eval.tmp-")
    engine = _engine(stage)
    seen = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(sorted(p.name for p in out.iterdir())))
    engine.run([1, 2], max_epochs=1)
    assert seen == [["case_9.txt"], ["case_9.txt"]], "while the run is going, the folder holds the previous run"
    assert sorted(p.name for p in out.iterdir()) == ["case_1.txt", "case_2.txt", "metrics.json"]
    assert stage.published and [p.name for p in tmp_path.iterdir()] == ["eval"]
    with pytest.raises(RuntimeError, match="already published"):
        stage.publish()


def test_a_failed_run_leaves_the_previous_outputs_untouched_and_no_staging(tmp_path):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "metrics.json").write_text("previous")
    stage = StagedOutputDir(out)
    with pytest.raises(RuntimeError, match="case 2 is corrupt"):
        _engine(stage, fail_at=2).run([1, 2, 3], max_epochs=1)
    assert [p.name for p in out.iterdir()] == ["metrics.json"] and (out / "metrics.json").read_text() == "previous"
    assert not stage.path.exists() and not stage.published


def test_leftovers_of_a_killed_run_are_removed_and_others_kept(tmp_path):
    (tmp_path / ".eval.tmp-abc123").mkdir()  # kill -9 during a run
    (tmp_path / ".eval.old-def456").mkdir()  # kill -9 between the two renames of a publish
    (tmp_path / ".evaluation.tmp-keep").mkdir()  # another folder's staging
    stage = StagedOutputDir(tmp_path / "eval")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([".evaluation.tmp-keep", stage.path.name])
    stage.discard()
    assert not stage.path.exists()


def test_a_file_in_the_way_is_refused(tmp_path):
    (tmp_path / "eval").write_text("x")
    with pytest.raises(FileExistsError, match="is not a folder"):
        StagedOutputDir(tmp_path / "eval")
    with pytest.raises(TypeError, match="folder path"):
        StagedOutputDir(None)
