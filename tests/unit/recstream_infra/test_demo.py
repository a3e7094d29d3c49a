"""The demo: its pieces on made-up records, and one short run end to end on ML-100K."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from recstream_infra.demo import _lag, _pick_samples, _stars_pending
from recstream_infra.demo_report import DemoRun, Sample, Tick, write_report
from streaming.ingest.store import BatchCommit

ROOT = Path(__file__).resolve().parents[3]


def test_sample_users_are_those_who_rate_most_in_the_second_half() -> None:
    users = np.array([1, 1, 1, 1, 2, 3, 3, 2, 3, 2, 4, 2])
    chosen = _pick_samples(users)
    # second half: 3, 2, 3, 2, 4, 2 -> user 2 three times, user 3 twice, user 4 once
    assert [s.user_id for s in chosen] == [2, 3, 4]
    assert chosen[0].positions.tolist() == [4, 7, 9, 11]
    assert _pick_samples(np.array([], dtype=np.int64)) == []


def test_lag_is_end_offsets_minus_what_the_job_committed() -> None:
    commits = [
        BatchCommit(batch_id=0, offsets={"0": 10, "1": 4}),
        BatchCommit(batch_id=1, offsets={"0": 25}),
    ]
    assert _lag({0: 30, 1: 4, 2: 7}, commits) == 5 + 0 + 7
    assert _lag({}, commits) is None


def test_the_demo_waits_for_a_version_s_own_stars_only_when_it_has_a_rating_model() -> None:
    with_model = {"hyperparameters": {"rating_samples": 30}, "version": 5}
    assert _stars_pending({**with_model, "stars_from_version": None})  # first version
    assert _stars_pending({**with_model, "stars_from_version": 3})  # carried stars
    assert not _stars_pending({**with_model, "stars_from_version": 5})
    assert not _stars_pending({"hyperparameters": {"rating_samples": 0}, "version": 5})
    assert not _stars_pending(None)


def test_the_report_draws_its_four_plots_from_commit_records(tmp_path: Path) -> None:
    demo = DemoRun(tmp_path / "state", "demo-topic", "demo", 8000)
    demo.commits_dir.mkdir(parents=True)
    day = 86_400
    for batch in range(6):
        record = BatchCommit(
            batch_id=batch, offsets={"0": 100 * (batch + 1)}, valid=100, invalid=batch % 2,
            model_version=1 if batch < 3 else 4, retrained=batch in (0, 3),
            committed_at=1_000.0 + batch, checked=100 if batch else 0, hits_at_10=batch * 3,
            popular_hits_at_10=batch,
            rating_time=[batch * day, batch * day + 10], freshness_s=[0.5 + batch, 2.0 + batch],
        )  # fmt: skip
        (demo.commits_dir / f"{batch}.json").write_text(json.dumps(asdict(record)))
    sample = Sample(7, np.array([3, 9]))
    sample.changes = [(5.0, 1, ["A", "B"]), (10.0, 2, ["B", "C <&>"])]
    target = write_report(tmp_path / "report", demo, [Tick(0.0, 0, None, None)], [sample])
    html = target.read_text()
    for image in ("ingested.png", "versions.png", "freshness.png", "hit_rate.png"):
        assert (tmp_path / "report" / image).stat().st_size > 1_000
        assert image in html
    assert "600 / 3" in html  # stored / dead letters
    assert f"{(3 + 6 + 9 + 12 + 15) / 500:.4f} over 500 ratings" in html
    assert f"<th>the same, popular list</th><td>{(1 + 2 + 3 + 4 + 5) / 500:.4f}</td>" in html
    assert "C &lt;&amp;&gt;" in html  # titles are escaped
