"""Settings of the Spark side: the session, the streaming query, and the model."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, NonNegativeFloat, model_validator
from pydantic_settings import SettingsConfigDict

from recstream_base.settings import StrictSettings

__all__ = ["ModelSettings", "SparkSettings", "StreamSettings"]


class SparkSettings(StrictSettings):
    """How recstream builds its SparkSession (``RECSTREAM_SPARK_*``)."""

    model_config = SettingsConfigDict(env_prefix="RECSTREAM_SPARK_")

    master: str = Field(
        "local[*]", min_length=1, description="Spark master URL: local[N], spark://host:port, ..."
    )
    app_name: str = Field("recstream", min_length=1, description="Spark application name.")
    driver_memory: str = Field(
        "2g", pattern=r"^\d+[mMgG]$", description="Driver JVM heap (local mode: all of Spark)."
    )
    shuffle_partitions: int = Field(
        2,
        ge=1,
        le=10_000,
        description=(
            "spark.sql.shuffle.partitions, also the partitions of the users' state (fixed "
            "when a checkpoint starts); each costs every micro-batch a state load and "
            "commit, so about one per executor core."
        ),
    )
    checkpoint_dir: str = Field(
        ".state/spark/checkpoints",
        min_length=1,
        description="Spark checkpoint directory, a local path or a URL such as hdfs://...",
    )
    connector: Literal["cache", "packages"] = Field(
        "cache",
        description=(
            "Where the Kafka connector comes from: 'cache' = jars resolved by make setup, "
            "'packages' = spark.jars.packages (Spark downloads them at start)."
        ),
    )
    jar_cache_dir: Path = Field(
        Path(".cache/jars"), description="Folder where make setup resolves JVM jars."
    )
    ui_enabled: bool = Field(True, description="Serve the Spark web UI.")
    console_progress: bool = Field(True, description="Draw Spark's console progress bars.")
    log_level: Literal["ERROR", "WARN", "INFO", "DEBUG"] = Field(
        "WARN", description="Log level of the Spark JVM."
    )
    extra_conf: dict[str, str] = Field(
        default_factory=dict,
        description='More Spark settings as a JSON object, e.g. {"spark.executor.memory": "4g"}.',
    )


class StreamSettings(StrictSettings):
    """The streaming query: pace, state and publishing (``RECSTREAM_STREAM_*``).

    The topic and brokers are ``RECSTREAM_KAFKA_*``, shared with the producer.
    """

    model_config = SettingsConfigDict(env_prefix="RECSTREAM_STREAM_")

    state_dir: Path = Field(
        Path(".state/streaming"),
        description="Ratings store, dead letters, commit records and saved models.",
    )
    checkpoint_location: str = Field(
        "",
        description="Structured Streaming checkpoint; empty = <state_dir>/query-checkpoint.",
    )
    starting_offsets: Literal["earliest", "latest"] = Field(
        "earliest", description="Where a query without a checkpoint starts reading the topic."
    )
    max_offsets_per_trigger: int = Field(
        100_000, ge=1, description="At most this many records per micro-batch."
    )
    trigger_interval_s: float = Field(
        1.0, gt=0, le=3_600, description="Seconds between micro-batches."
    )
    fold_in: bool = Field(
        True, description="Refresh the lists of users who just rated, between retrains."
    )
    version_grace_s: float = Field(
        300.0, ge=0, description="Seconds a superseded model version stays readable in Redis."
    )
    redis_retry_initial_s: float = Field(
        1.0, gt=0, description="First wait before publishing again after Redis failed."
    )
    redis_retry_max_s: float = Field(
        60.0, gt=0, description="Longest wait between publishing attempts while Redis is down."
    )
    compact_min_batches: int = Field(
        32,
        ge=1,
        description="Batch folders of the store a compaction folds into a segment at least.",
    )

    def checkpoint_path(self) -> str:
        """The query checkpoint: as set, or a folder under the state folder."""
        return self.checkpoint_location or str(self.state_dir / "query-checkpoint")


class ModelSettings(StrictSettings):
    """ALS, the retrain policy, evaluation and list length (``RECSTREAM_MODEL_*``)."""

    model_config = SettingsConfigDict(env_prefix="RECSTREAM_MODEL_")

    rank: int = Field(20, ge=1, le=1_000, description="ALS rank (latent factors).")
    max_iter: int = Field(15, ge=1, le=200, description="ALS iterations per retrain.")
    reg_param: float = Field(0.1, ge=0, description="ALS regParam (scaled by ratings per user).")
    implicit_prefs: bool = Field(
        True,
        description=(
            "Treat ratings as implicit feedback (ranks better; the predicted stars and "
            "their RMSE come from the rating model, RECSTREAM_MODEL_RATING_*)."
        ),
    )
    alpha: float = Field(1.0, ge=0, description="ALS alpha: confidence scale, implicit only.")
    nonnegative: bool = Field(False, description="Constrain factors to be non-negative.")
    seed: int = Field(42, description="ALS random seed.")
    popularity_half_life_days: float = Field(
        14.0,
        ge=0,
        description=(
            "Popularity counts each rating with weight 2^(-age / half-life), age in days "
            "before the newest stored rating; 0 = every rating counts 1 (all-time counts)."
        ),
    )
    popularity_weight: float = Field(
        0.1,
        ge=0,
        description=(
            "Weight of the popularity prior added to every model score: weight × "
            "standardised log(1 + popularity) of the movie; 0 = model scores only."
        ),
    )
    transition_weight: float = Field(
        10.0,
        ge=0,
        description=(
            "Hybrid lists: what a user's best short-term candidate (the movie that most "
            "often followed their recent movies) gains over ALS + prior; 0 = ALS only."
        ),
    )
    transition_window: int = Field(
        10, ge=1, le=100, description="A rating counts as following the user's previous N movies."
    )
    transition_reverse: float = Field(
        0.7,
        ge=0,
        le=1,
        description="Weight with which a rating also counts as preceding those N movies.",
    )
    transition_followers: int = Field(
        200,
        ge=0,
        description=(
            "Followers kept per movie: its N largest counts (a row is cut back once it "
            "holds 2N), so the counts grow with the movies, not the ratings; 0 = keep all."
        ),
    )
    transition_memory: int = Field(
        20, ge=1, le=200, description="The user's last N movies score the short-term candidates."
    )
    transition_decay: float = Field(
        0.85,
        gt=0,
        le=1,
        description="Weight of a user's k-th most recent movie: decay^k (newest 1).",
    )
    transition_source_norm: float = Field(
        0.5,
        ge=0,
        le=1,
        description=(
            "Counts out of a movie divided by their total^β (0 = raw counts, 1 = shares), "
            "so a much-rated movie does not drown the others."
        ),
    )
    rating_samples: int = Field(
        25,
        ge=0,
        le=1_000,
        description=(
            "Posterior draws the rating model (a Bayesian factorization machine, myfm; "
            "predicted stars beside each listed movie) keeps; 0 = no rating model, lists "
            "carry no stars."
        ),
    )
    rating_rank: int = Field(10, ge=1, le=200, description="Rating model: latent factors.")
    rating_sweeps: int = Field(
        60, ge=1, le=10_000, description="Rating model: Gibbs sweeps per retrain."
    )
    rating_burn_in: int = Field(
        10, ge=0, description="Rating model: first sweeps discarded before draws are kept."
    )
    rating_spark_above: int = Field(
        2_000_000,
        ge=0,
        description=(
            "Past this many ratings a version's stars come from Spark's explicit ALS "
            "(fitted and scored on the executors) instead of the factorization machine, "
            "which samples in one process on the driver's host; 0 = always Spark."
        ),
    )
    rating_spark_iter: int = Field(
        10, ge=1, le=200, description="Stars past the threshold: ALS iterations."
    )
    rating_spark_regs: tuple[NonNegativeFloat, ...] = Field(
        (0.05, 0.1, 0.2),
        min_length=1,
        description=(
            "Stars past the threshold: ALS regParam candidates (scaled per rating), a JSON "
            "list; with more than one, each fit keeps the best on a tenth of its ratings."
        ),
    )
    rating_spark_bias_shrink: float = Field(
        10.0,
        ge=0,
        description=(
            "Stars past the threshold: pseudo-ratings shrinking each movie's and user's "
            "offset to 0."
        ),
    )
    rating_in_background: bool = Field(
        True,
        description=(
            "Fit the rating model in a separate process beside the stream: a retrain "
            "publishes its "
            "lists at once with the newest stars already fitted, then again with its own "
            "when they are ready; false = the retrain waits for the fit."
        ),
    )
    retrain_in_background: bool = Field(
        True,
        description=(
            "Fit, evaluate and write a new version's lists beside the stream: the "
            "micro-batch that finds a retrain due starts it and returns, and the version is "
            "switched in (with the users who rated meanwhile folded into it) when ready; "
            "false = the micro-batch waits for the retrain."
        ),
    )
    retrain_slots: int = Field(
        0,
        ge=0,
        le=10_000,
        description=(
            "Spark task slots a retrain built beside the stream fills at once (its ALS "
            "blocks and list partitions), so the micro-batches keep the other cores; 0 = "
            "all but one of Spark's default parallelism, at least 1."
        ),
    )
    retrain_every_ratings: int = Field(
        100_000, ge=1, description="Retrain after this many new ratings (N) ..."
    )
    retrain_every_s: float = Field(
        600.0, gt=0, description="... or after this many seconds (T), whichever comes first ..."
    )
    min_ratings: int = Field(
        1_000, ge=1, description="... once at least this many ratings are stored (M)."
    )
    holdout_fraction: float = Field(
        0.1,
        ge=0,
        lt=1,
        description=(
            "Most recent share of ratings held out of each fit to evaluate it (0 = no "
            "evaluation); they reach the lists by fold-in."
        ),
    )
    evaluation_users: int = Field(
        10_000,
        ge=1,
        description=(
            "Each retrain's evaluation ranks at most this many held-out users (a seeded "
            "sample when there are more), so that the driver never reads every stored "
            "rating; RMSE is over their held-out ratings."
        ),
    )
    relevant_rating: float = Field(
        4.0, description="A held-out rating at least this high counts as relevant for P/R/NDCG."
    )
    top_k: int = Field(
        100, ge=1, le=10_000, description="Length of each stored list (serving truncates)."
    )
    similar_k: int = Field(
        20, ge=1, le=100, description="Nearest movies published per movie (/movies/{id}/similar)."
    )
    explain_k: int = Field(
        10,
        ge=0,
        le=100,
        description=(
            "Listed movies per user published with the rated movie behind each "
            "(?explain=true; the API's default n); 0: none. Each one more costs the "
            "publication time (benchmarks/bench_retrain.py)."
        ),
    )

    @model_validator(mode="after")
    def _check_alpha(self) -> ModelSettings:
        if self.implicit_prefs and self.alpha <= 0:
            msg = f"alpha must be > 0 with implicit_prefs, got {self.alpha}"
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _check_rating_draws(self) -> ModelSettings:
        room = self.rating_sweeps - self.rating_burn_in
        if self.rating_samples > max(room, 0):
            msg = (
                f"rating_samples ({self.rating_samples}) must be at most rating_sweeps - "
                f"rating_burn_in ({self.rating_sweeps} - {self.rating_burn_in} = {room}): "
                "raise RECSTREAM_MODEL_RATING_SWEEPS or keep fewer draws"
            )
            raise ValueError(msg)
        return self
