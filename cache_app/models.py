"""Operational state that lives in Postgres: masterplans, policies and prices."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from rest_framework_api_key.models import AbstractAPIKey

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import ArrayLike, NDArray

THIRTY_DAYS = 30 * 24 * 3600


class Masterplan(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    id = models.UUIDField(
        primary_key=True, default=uuid.uuid4, editable=True, help_text="The pipeline's own masterplan id (a UUID)."
    )
    name = models.CharField(max_length=200, help_text="Human-readable name shown in the admin.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"


class CachePolicy(models.Model):
    class Layer(models.TextChoices):
        LLM = "llm", "LLM prompt cache"
        RAG = "rag", "RAG query cache"

    layer = models.CharField(
        max_length=8, choices=Layer.choices, unique=True, help_text="Which cache layer this row governs."
    )
    enabled = models.BooleanField(
        default=True,
        help_text="When off, every lookup misses and nothing is stored: each call goes to the LLM or the RAG "
        "engine at full cost. Entries already stored are kept and are served again when it is back on.",
    )
    ttl_seconds = models.PositiveIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(THIRTY_DAYS)],
        help_text="How long an entry lives in Redis, in seconds (1 s to 30 days; LLM default 86400, RAG 3600). "
        "A lower TTL gives fresher answers and a lower hit rate; a higher one saves more and uses more Redis "
        "memory. Applies to entries written after the change.",
    )
    similarity_threshold = models.FloatField(
        default=0.95,
        validators=[MinValueValidator(0.5), MaxValueValidator(1.0)],
        help_text="RAG only: minimum cosine similarity for a 'similar' hit (0.5 to 1.0, default 0.95). "
        "A lower threshold answers more queries from the cache (more similar hits, more saved) and risks "
        "returning results retrieved for a question that only looks alike; 1.0 allows exact hits only.",
    )
    similarity_guard = models.BooleanField(
        default=True,
        help_text="RAG only: refuse a 'similar' hit whose query differs from the cached one in a number, a code "
        "identifier, a negation or an opposite term (docs/rag_cache.md, Semantic correctness).",
    )
    similarity_shadow = models.BooleanField(
        default=False,
        help_text="RAG only: shadow mode. 'Similar' hits are counted and recorded (Similarity shadow records) but "
        "callers get a miss: measure the false-hit risk on live traffic before trusting similarity.",
    )
    cache_nonzero_temperature = models.BooleanField(
        default=True,
        help_text="LLM only: also cache responses generated with temperature > 0. On: more hits, and a repeated "
        "request always gets the first sampled answer; off: every sampled request pays for a fresh answer.",
    )
    cache_truncated = models.BooleanField(
        default=False,
        help_text="LLM only: also cache responses cut off by max_tokens (finish_reason length). On: more hits, "
        "and an incomplete answer is served again until it expires; off: truncated answers are asked again.",
    )
    notes = models.TextField(blank=True, help_text="Why the policy is set this way.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "cache policies"
        ordering = ["layer"]

    def __str__(self) -> str:
        return f"{self.get_layer_display()} policy"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Out-of-range values are refused in code too, not only in forms.
        self.full_clean()
        super().save(*args, **kwargs)


class BatchPolicy(models.Model):
    """A single-row table: the batcher's knobs."""

    enabled = models.BooleanField(
        default=True,
        help_text="When off, every request is sent on its own: no waiting for a window, and one upstream call "
        "(and its fixed overhead) per prompt.",
    )
    max_batch_size = models.PositiveSmallIntegerField(
        default=5,
        validators=[MinValueValidator(1), MaxValueValidator(50)],
        help_text="A batch is sent as soon as it holds this many prompts (1 to 50, default 5). Larger batches "
        "make fewer upstream calls, and each answer waits for a longer combined response; 1 turns batching off.",
    )
    batch_window_ms = models.PositiveIntegerField(
        default=500,
        validators=[MinValueValidator(1), MaxValueValidator(10000)],
        help_text="A batch is sent this many milliseconds after its first prompt (1 to 10000, default 500). "
        "A longer window fills more batches (fewer calls) and adds up to this much latency to each request.",
    )
    notes = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "batch policy"

    def __str__(self) -> str:
        return "Batch policy"

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.pk = 1  # singleton
        self.full_clean()
        super().save(*args, **kwargs)


class ModelPricing(models.Model):
    model = models.CharField(max_length=100, unique=True, help_text="Model name as sent to the provider.")
    provider = models.CharField(max_length=32, blank=True, help_text="anthropic, openai, ...")
    input_usd_per_mtok = models.DecimalField(
        max_digits=10,
        decimal_places=4,
        validators=[MinValueValidator(Decimal("0"))],
        help_text="USD per 1M input (prompt) tokens.",
    )
    output_usd_per_mtok = models.DecimalField(
        max_digits=10,
        decimal_places=4,
        validators=[MinValueValidator(Decimal("0"))],
        help_text="USD per 1M output (completion) tokens.",
    )
    source = models.CharField(max_length=300, blank=True, help_text="Where the price comes from, and when it was read.")
    max_output_tokens = models.PositiveIntegerField(
        default=4096,
        validators=[MinValueValidator(1), MaxValueValidator(1_000_000)],
        help_text="The model's maximum output (tokens): a request's max_tokens may not exceed it.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "model pricing"
        verbose_name_plural = "model pricing"
        ordering = ["model"]

    def __str__(self) -> str:
        return self.model

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.full_clean()
        super().save(*args, **kwargs)


class Document(models.Model):
    """A retrievable passage for the RAG engine, with its embedding.

    The embedding is stored as raw little-endian float32 bytes (``dim * 4`` bytes) next to
    the name of the model that produced it; a search only compares vectors of one model.
    ``cache_app.rag.documents`` keeps an in-memory matrix per (masterplan, model).
    """

    masterplan = models.ForeignKey(
        Masterplan,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="documents",
        help_text="The masterplan this document belongs to; empty for the global corpus.",
    )
    content = models.TextField(help_text="The passage returned by a retrieval.")
    metadata = models.JSONField(default=dict, blank=True, help_text="Free-form JSON (source, title, ...).")
    embedding = models.BinaryField(help_text="float32 little-endian vector, L2-normalised.")
    embedding_model = models.CharField(max_length=100, help_text="The embedder's model_name, e.g. all-MiniLM-L6-v2.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["masterplan", "embedding_model"], name="document_scope_idx")]

    def __str__(self) -> str:
        return self.content[:60]

    def set_embedding(self, vector: ArrayLike) -> None:
        import numpy as np

        self.embedding = np.asarray(vector, dtype="<f4").reshape(-1).tobytes()

    def get_embedding(self) -> NDArray[np.float32]:
        import numpy as np

        return np.frombuffer(bytes(self.embedding), dtype="<f4")


# --- Access control: the permissions roles are made of, and API keys (cache_app.access) ---
class AccessPermission(models.Model):
    """No table: only the anchor of mgecache's own permissions (``cache_app.<codename>``)."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("use_pipeline", "Generate, retrieve, run waves and read the statistics of usable masterplans"),
            ("invalidate_cache", "Invalidate cached answers (a masterplan or whole layers)"),
            ("tune_policy", "Change cache and batch policies"),
            ("view_all_statistics", "Read the statistics of every masterplan and the global totals"),
        ]

    def __str__(self) -> str:
        return "mgecache permissions"


class PipelineAPIKey(AbstractAPIKey):
    """A named, hashed (SHA-512, never stored in clear), revocable key that acts as its user.

    The key's permissions are its user's (through the user's groups: pipeline, operator,
    admin). ``restricted`` keys may only touch the listed masterplans and never the global
    scope; the flag is explicit so that deleting every listed masterplan narrows a key
    to nothing instead of widening it to everything.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="api_keys",
        help_text="The key acts as this user, with this user's role (groups and permissions).",
    )
    restricted = models.BooleanField(
        default=False,
        help_text="Only the masterplans below (and never the global scope). Off: every masterplan the role allows.",
    )
    masterplans = models.ManyToManyField(
        "cache_app.Masterplan",
        blank=True,
        related_name="api_keys",
        help_text="The masterplans a restricted key may use.",
    )
    last_used_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Stamped on use (at most once a minute)."
    )

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"

    def allowed_masterplans(self) -> frozenset[str] | None:
        """None when unrestricted, else the canonical UUID strings the key may use (read once per instance)."""
        if not self.restricted:
            return None
        cached: frozenset[str] | None = self.__dict__.get("_allowed_masterplans")
        if cached is None:
            cached = frozenset(str(pk) for pk in self.masterplans.values_list("pk", flat=True))
            self.__dict__["_allowed_masterplans"] = cached
        return cached


class AuditSource(models.TextChoices):
    API = "api", "API"
    ADMIN = "admin", "Admin"
    CLI = "cli", "manage.py"


class InvalidationAudit(models.Model):
    """One invalidation operation: who asked, from where, what it removed, and how it ended.

    Created by ``cache_app.actions.request_invalidation`` and carried out by the
    ``perform_invalidation`` Celery task (or inline by manage.py), whichever way it started.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The user who asked, if a user did.",
    )
    actor_name = models.CharField(
        max_length=150, blank=True, help_text="Who asked, as recorded at the time (kept if the user is deleted)."
    )
    source = models.CharField(max_length=8, choices=AuditSource.choices)
    masterplan_id = models.UUIDField(
        null=True, blank=True, db_index=True, help_text="The masterplan invalidated; empty for whole layers."
    )
    layers = models.JSONField(default=list, help_text='The layers invalidated, e.g. ["llm", "rag"].')
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    keys_removed = models.PositiveIntegerField(default=0, help_text="Cache entries deleted, all layers.")
    removed_by_layer = models.JSONField(default=dict, blank=True, help_text="Cache entries deleted per layer.")
    requested_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.FloatField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-requested_at"]
        verbose_name = "invalidation"

    def __str__(self) -> str:
        target = f"masterplan {self.masterplan_id}" if self.masterplan_id else "all masterplans"
        return f"Invalidate {', '.join(self.layers)} of {target} ({self.status})"


class PolicyChangeAudit(models.Model):
    """One change to a cache or batch policy, with the old and new values of the fields it changed."""

    class Target(models.TextChoices):
        LLM = "llm", "LLM prompt cache"
        RAG = "rag", "RAG query cache"
        BATCHING = "batching", "Batching"

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_name = models.CharField(max_length=150, blank=True)
    source = models.CharField(max_length=8, choices=AuditSource.choices)
    target = models.CharField(max_length=8, choices=Target.choices, db_index=True)
    old_values = models.JSONField(default=dict, help_text="Changed fields before the change.")
    new_values = models.JSONField(default=dict, help_text="Changed fields after the change.")
    changed_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-changed_at"]
        verbose_name = "policy change"

    def __str__(self) -> str:
        return f"{self.get_target_display()}: {', '.join(sorted(self.new_values))}"


class SimilarityShadowRecord(models.Model):
    """A RAG similarity hit that shadow mode withheld from its caller (CachePolicy.similarity_shadow).

    Written in batches, off the lookup's thread (``cache_app.rag.shadow``); the table keeps only
    the newest ``MGECACHE['RAG_SHADOW_MAX_RECORDS']`` rows.
    """

    created_at = models.DateTimeField(db_index=True, help_text="When the lookup happened.")
    query = models.TextField(help_text="The query that was looked up.")
    cached_query = models.TextField(help_text="The cached query whose retrieval would have been served.")
    similarity = models.FloatField(help_text="Cosine similarity of the two query embeddings.")
    embedding_model = models.CharField(max_length=100)
    scope = models.CharField(max_length=36, help_text="The masterplan's UUID, or 'global'.")

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.similarity:.3f}: {self.query[:40]!r} ~ {self.cached_query[:40]!r}"


class StatsSnapshot(models.Model):
    """The statistics at one moment, written every minute for the operator console's dashboard.

    Every figure is a running total as the durable counters reported it (they only grow,
    except when Redis loses them); the dashboard charts the differences between
    snapshots. Rows older than ``MGECACHE['CONSOLE_SNAPSHOT_RETENTION_DAYS']`` are deleted.
    """

    taken_at = models.DateTimeField(db_index=True, help_text="When the figures were read.")
    llm_hits = models.BigIntegerField(default=0)
    llm_misses = models.BigIntegerField(default=0)
    rag_exact_hits = models.BigIntegerField(default=0)
    rag_similar_hits = models.BigIntegerField(default=0)
    rag_misses = models.BigIntegerField(default=0)
    saved_usd = models.FloatField(default=0.0, help_text="Dollars the cache hits did not spend.")
    spent_usd = models.FloatField(default=0.0, help_text="Dollars spent on LLM calls.")
    batches = models.BigIntegerField(default=0)
    batched_requests = models.BigIntegerField(default=0)
    redis_errors = models.BigIntegerField(default=0, help_text="Cache calls that failed open on a Redis error.")
    breaker_skips = models.BigIntegerField(
        default=0, help_text="Cache calls that skipped Redis because the circuit breaker was open."
    )
    batch_sizes = models.JSONField(default=dict, blank=True, help_text="Prompts per batch -> batches.")
    fail_open = models.JSONField(
        default=dict, blank=True, help_text="'failed|skipped:<layer>:<operation>' -> calls served without Redis."
    )
    similarity_scores = models.JSONField(
        default=dict, blank=True, help_text="Best similarity of each similarity lookup: 'le:<bound>' -> lookups."
    )
    top_masterplans = models.JSONField(
        default=list, blank=True, help_text="The masterplans that saved most: [[uuid, saved_usd], ...]."
    )
    live_entries = models.JSONField(
        default=dict, blank=True, help_text="Live entries per layer when the snapshot was taken, and 'complete'."
    )
    llm_provider = models.CharField(max_length=32, blank=True)

    class Meta:
        ordering = ["-taken_at"]
        get_latest_by = "taken_at"
        verbose_name = "statistics snapshot"

    def __str__(self) -> str:
        return f"Statistics at {self.taken_at:%Y-%m-%d %H:%M:%S}"
