"""The one settings object. Every address and limit is overridable by environment.

Variables are prefixed ``INTENTSTREAM_`` (``INTENTSTREAM_TOPIC_PARTITIONS=8``); the three
service addresses also accept the conventional unprefixed names ``KAFKA_BOOTSTRAP``,
``REDIS_URL`` and ``LLM_BASE_URL``. When an address is unset, the local stack recorded by
``intentstream up`` / ``intentstream llm`` under ``home`` is used.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal, Self

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _alias(name: str) -> AliasChoices:
    return AliasChoices(name, f"INTENTSTREAM_{name}")


class Settings(BaseSettings):
    """Configuration of every intentstream process (worker, CLI, demo, tests)."""

    model_config = SettingsConfigDict(env_prefix="INTENTSTREAM_", extra="ignore", frozen=True)

    # Where the local stack keeps its state file, logs, models and faust data.
    home: Path = Path(".intentstream")
    # The real logs (REES46, Online Retail) the demo, tests and reports use: the copies that
    # ship inside the package (intentstream/datasets/README.md says where they come from).
    datasets_dir: Path = Path(__file__).resolve().parent / "datasets"

    # Service addresses; None means "use the local stack".
    kafka_bootstrap: str | None = Field(None, validation_alias=_alias("KAFKA_BOOTSTRAP"))
    redis_url: str | None = Field(None, validation_alias=_alias("REDIS_URL"))
    llm_base_url: str | None = Field(None, validation_alias=_alias("LLM_BASE_URL"))
    llm_api_key: str = Field("EMPTY", validation_alias=_alias("LLM_API_KEY"))

    # The LLM served by vLLM.
    llm_model_name: str = "qwen2.5-coder-0.5b-instruct"
    llm_model_dir: Path | None = None  # default: <home>/models/<llm_model_name>
    # The vLLM environment's interpreter; default: .venv-llm/bin/python in the working
    # directory, where `make setup` builds it (vLLM cannot share the worker's environment).
    llm_python: Path | None = None
    llm_startup_timeout_s: float = 600.0
    llm_request_timeout_s: float = 180.0
    llm_max_retries: int = Field(2, ge=0, le=10)
    llm_concurrency: int = Field(4, ge=1, le=256)
    # CPU priority (nice) of the local vLLM server `intentstream llm`/`up` starts: on a box it
    # shares with the stream, the LLM (the slow path) yields the CPU to the live records.
    llm_nice: int = Field(10, ge=0, le=19)

    # Kafka security (intentstream/kafka.py), used by every Kafka client the project makes.
    # SSL/SASL_SSL: TLS verified against the CA file (the system store when unset); a client
    # certificate and key for mutual TLS. SASL_*: PLAIN or SCRAM with a user and password.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_tls_ca_file: Path | None = None
    kafka_tls_cert_file: Path | None = None
    kafka_tls_key_file: Path | None = None
    kafka_tls_key_password: SecretStr | None = None
    kafka_tls_check_hostname: bool = True
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None

    # Kafka topology.
    app_id: str = "intentstream"
    topic_behaviors: str = "behaviors"
    topic_signals: str = "env-signals"
    topic_replans: str = "replans"
    topic_dead_letters: str = "dead-letters"
    topic_partitions: int = Field(4, ge=1, le=1024)
    broker_session_timeout_s: float = 6.0  # a group join takes half of it on Tansu
    # Find changelog ends by reading forward (Tansu under-reports them; see stream/tansu.py).
    # None: only on the local stack, i.e. when KAFKA_BOOTSTRAP is not set.
    scan_end_offsets: bool | None = None
    worker_web_port: int | None = None  # None: run the worker without faust's web server

    # Input limits: anything past them is dead-lettered with a reason.
    max_event_bytes: int = Field(16 * 1024, ge=256)
    max_future_skew_s: float = Field(300.0, ge=0.0)

    # Per-user compressed context (stream/context.py).
    context_recent_events: int = Field(6, ge=1, le=100)  # behaviours kept in full
    context_max_interests: int = Field(12, ge=1, le=64)  # interest clusters for older ones
    context_seen_ids: int = Field(128, ge=16, le=4096)  # event-id hashes for duplicates
    context_join_similarity: float = Field(0.55, ge=0.0, le=1.0)
    interest_half_life_s: float = Field(3600.0, gt=0.0)  # event time
    # The lasting profile: kinds of item kept, the half-life of their weight (event time),
    # and what a kind weighs against what the user does now (stream/live.py).
    context_max_kinds: int = Field(16, ge=0, le=256)
    lasting_half_life_s: float = Field(30 * 24 * 3600.0, gt=0.0)
    lasting_share: float = Field(0.5, ge=0.0, le=100.0)

    # The FP8 entity pool and its scorer (kernels/scorer.py): the arbiter's attention of
    # candidate tags over the user's evidence. auto: the Triton kernels on CUDA, PyTorch
    # otherwise.
    kernel_backend: Literal["auto", "triton", "torch"] = "auto"
    scorer_sharpness: float = Field(10.0, gt=0.0, le=100.0)  # softmax scale on cosines
    # PyTorch CPU threads in a worker (the scorer's CPU path, the embedder). One: a worker
    # shares its cores with its event loop and often with vLLM, and torch's spinning thread
    # pool, measured under that contention, burnt 4.7x the CPU for the same pool work.
    torch_threads: int = Field(1, ge=1, le=256)

    # The re-plan rule (stream/trigger.py) and the budget that matches LLM capacity.
    replan_cooldown_s: float = Field(2.0, ge=0.0)
    # An interest is worth asking the LLM about from this recency-decayed weight (a view
    # weighs 1, a cart 3, a purchase 4: see schemas.events.ACTION_WEIGHT): five views, two
    # carts, or a purchase and a view, within a few minutes.
    replan_min_weight: float = Field(4.5, gt=0.0)
    # A user's first plan waits for an interest of this weight (a dozen views, three
    # purchases); until then the live record serves them. Below replan_min_weight: that one.
    replan_first_min_weight: float = Field(12.0, gt=0.0)
    replan_stale_after_s: float = Field(3600.0, gt=0.0)
    replan_sweep_interval_s: float = Field(30.0, gt=0.0)
    replan_budget_per_s: float = Field(2.0, gt=0.0)  # re-plans let out per second per worker
    replan_budget_burst: float = Field(20.0, ge=1.0)
    replan_queue_capacity: int = Field(10_000, ge=1)  # pending re-plans; beyond, least urgent shed

    # The ingest hot path (stream/ingest.py).
    ingest_batch_max: int = Field(5000, ge=1, le=100_000)
    broker_outage_s: float = Field(60.0, gt=0.0)  # then the worker exits with an error
    stats_interval_s: float = Field(2.0, gt=0.0)  # <home>/workers/<app>-<pid>.json

    log_format: Literal["text", "json"] = "text"  # json: one object per line, with user/event ids

    # Prometheus /metrics of each worker (stream/metrics.py); None: not served.
    metrics_port: int | None = Field(None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"  # 0.0.0.0 in a container
    # The HMAS agents (agents/chain.py).
    tags_per_user: int = Field(4, ge=1, le=10)
    # Live entries (stream/live.py) a record holds beside its LLM tags: tags_per_user +
    # live_tags is at most 10 (schemas.record.MAX_TAGS).
    live_tags: int = Field(3, ge=0, le=6)
    # The shared plan cache (stream/plancache.py): what the LLM made for an interest, served
    # to other users with it; off, every new interest is asked about.
    plan_cache: bool = True
    plan_cache_ttl_s: int = Field(7 * 24 * 3600, ge=1)
    # The item catalog (stream/catalog.py): each tag of a record carries this many items.
    catalog: bool = True
    catalog_items_per_tag: int = Field(10, ge=1, le=20)
    catalog_co_viewed: int = Field(30, ge=0, le=50)  # items a record carries, co-viewed with the last ones
    catalog_category_popular: int = Field(30, ge=0, le=50)  # the last category's bestsellers a record carries
    catalog_half_life_s: float = Field(3 * 24 * 3600.0, gt=0)  # popularity's, in event time
    catalog_flush_s: float = Field(10.0, gt=0)  # how often a worker shares what its batches saw
    judge_online: bool = True  # judge every plan before writing; a "bad" one is not written
    agents_embedder: Literal["minilm", "hashed"] = "minilm"  # merges near-duplicate tags

    # Redis security: credentials here (e.g. from a Kubernetes Secret) override any in the URL;
    # a rediss:// URL turns TLS on, verified against this CA file when given.
    redis_username: str | None = None
    redis_password: str | None = None
    redis_tls_ca_file: Path | None = None
    # Redis Cluster: records keep their per-user hash tag; notifications go to
    # changes_shards streams (see docs/redis-contract.md).
    redis_cluster: bool = False
    changes_shards: int = Field(16, ge=1, le=1024)

    # Redis record.
    redis_key_prefix: str = "intent"
    record_ttl_s: int = Field(7 * 24 * 3600, ge=1)
    changes_stream: str = "intent:changes"
    changes_maxlen: int = Field(100_000, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        tls = self.kafka_security_protocol in ("SSL", "SASL_SSL")
        files = [self.kafka_tls_ca_file, self.kafka_tls_cert_file, self.kafka_tls_key_file]
        if not tls and any(f is not None for f in files):
            raise ValueError(
                "Kafka TLS files are set but INTENTSTREAM_KAFKA_SECURITY_PROTOCOL is "
                f"{self.kafka_security_protocol}: use SSL or SASL_SSL"
            )
        if (self.kafka_tls_cert_file is None) != (self.kafka_tls_key_file is None):
            raise ValueError("mutual TLS needs both INTENTSTREAM_KAFKA_TLS_CERT_FILE and _KEY_FILE")
        sasl = self.kafka_security_protocol.startswith("SASL_")
        if sasl and not (self.kafka_sasl_username and self.kafka_sasl_password):
            raise ValueError(
                f"INTENTSTREAM_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "INTENTSTREAM_KAFKA_SASL_USERNAME and INTENTSTREAM_KAFKA_SASL_PASSWORD"
            )
        if self.tags_per_user + self.live_tags > 10:  # schemas.record.MAX_TAGS
            raise ValueError("tags_per_user + live_tags must be at most 10, the tags a record holds")
        return self

    def to_env(self) -> dict[str, str]:
        """These settings as environment variables, for a child process (secrets included:
        the child needs them; they are never logged)."""
        return {
            f"INTENTSTREAM_{name.upper()}": str(
                getattr(self, name).get_secret_value()
                if isinstance(getattr(self, name), SecretStr)
                else value
            )
            for name, value in self.model_dump(exclude_none=True).items()
        }

    @property
    def state_file(self) -> Path:
        return self.home / "stack.json"

    @property
    def model_dir(self) -> Path:
        return self.llm_model_dir or self.home / "models" / self.llm_model_name

    @property
    def llm_interpreter(self) -> Path:
        return self.llm_python or Path(".venv-llm") / "bin" / "python"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
