"""Operational state that lives in Postgres: masterplans, policies and prices."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

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
        permissions = [("invalidate_cache", "Can invalidate a masterplan's cached answers")]

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
        permissions = [("tune_policy", "Can tune cache policies")]

    def __str__(self) -> str:
        return f"{self.get_layer_display()} policy"

    def save(self, *args, **kwargs) -> None:
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

    def save(self, *args, **kwargs) -> None:
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
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "model pricing"
        verbose_name_plural = "model pricing"
        ordering = ["model"]

    def __str__(self) -> str:
        return self.model

    def save(self, *args, **kwargs) -> None:
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

    def set_embedding(self, vector) -> None:
        import numpy as np

        self.embedding = np.asarray(vector, dtype="<f4").reshape(-1).tobytes()

    def get_embedding(self):
        import numpy as np

        return np.frombuffer(bytes(self.embedding), dtype="<f4")


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
