"""The ``foreachBatch`` body: one micro-batch through every stage, over narrow interfaces.

Each micro-batch runs, in order:

1. **intake** (``BatchStore.take``): store the valid ratings and the dead letters under
   the batch id (overwriting, so a replayed batch replaces its first attempt instead of
   adding to it). The records come validated and checked against Spark's state of every
   user's ratings (``streaming.ingest.state``): repeats of stored events are dead letters,
   first ratings of a movie are marked, and the batch's users come with their past ratings;
2. **history**: check each rating against the list its user was served (the live hit
   rate), merge the batch into its users' past ratings (kept in ``RecentRatings`` until
   their lists are published), and count each user's first ratings of a movie into the
   short-term transitions (``streaming.model.transitions``);
3. **retrain** when the policy says so and none is building: start building version
   ``batch_id + 1`` (fit, evaluate, save, write its lists beside the current ones;
   ``streaming.model.retrain``) on what the store holds through this batch, and return. A
   version whose build finished is switched in here (or between batches), after the
   users who rated since its snapshot are folded into it. Otherwise, and meanwhile, the
   users who rated get fold-in lists from the current version. The rating model, for
   the predicted stars, is fitted beside the stream too and adopted when ready;
4. **publish** (``ListPublisher.flush``): the switch to a new version (one atomic
   compare-and-set), or fold-in lists into the current version; what Redis refuses waits
   for the next flush;
5. **commit** (``BatchStore.commit``): the batch's record (offsets, counts, model
   version, live hit rate), last.

A batch run again under the same id (after a crash) meets Spark's state as the batch
before left it (so its first attempt's ratings are not repeats) and, if its build got
that far, its model saved (step 3 loads it), so steps 1-5 are idempotent. The driver
holds nothing that grows with the stored ratings: the batch's users, the users whose
lists wait, item factors and counts. A crash during a build
loses nothing: its batch is committed, and the next batch that finds a retrain due
starts another under a higher version. The collaborators are protocols: the job wires
Spark, Kafka and Redis (``streaming.job``); unit tests wire in-memory ones.
"""

from streaming.pipeline.batch import (
    RECENT_USERS_KEPT,
    REPORTS_KEPT,
    TRIM_EVERY_S,
    BatchPipeline,
    latest_offsets,
    ratings_since,
    with_stars,
)
from streaming.pipeline.contracts import BatchStore, ListPublisher, Models, StarsFitting, Topic
from streaming.pipeline.report import BatchReport, keep_newest, live_hits, popular_hits

__all__ = [
    "RECENT_USERS_KEPT",
    "REPORTS_KEPT",
    "TRIM_EVERY_S",
    "BatchPipeline",
    "BatchReport",
    "BatchStore",
    "ListPublisher",
    "Models",
    "StarsFitting",
    "Topic",
    "keep_newest",
    "latest_offsets",
    "live_hits",
    "popular_hits",
    "ratings_since",
    "with_stars",
]
