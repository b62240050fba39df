"""Seed the default policies and model prices."""

from decimal import Decimal

from django.db import migrations

# Published list prices in USD per 1M tokens (input, output), read 2026-11.
PRICES = [
    ("claude-3-5-sonnet", "anthropic", "3.00", "15.00", "anthropic.com/pricing (Claude 3.5 Sonnet), the original plan's baseline"),
    ("claude-sonnet-4-5", "anthropic", "3.00", "15.00", "anthropic.com/pricing (Claude Sonnet 4.5, prompts <= 200k tokens)"),
    ("claude-haiku-4-5", "anthropic", "1.00", "5.00", "anthropic.com/pricing (Claude Haiku 4.5)"),
    ("claude-opus-4-1", "anthropic", "15.00", "75.00", "anthropic.com/pricing (Claude Opus 4.1)"),
    ("gpt-4o", "openai", "2.50", "10.00", "openai.com/api/pricing (GPT-4o)"),
    ("gpt-4o-mini", "openai", "0.15", "0.60", "openai.com/api/pricing (GPT-4o mini)"),
    ("gpt-4.1", "openai", "2.00", "8.00", "openai.com/api/pricing (GPT-4.1)"),
]


def seed(apps, schema_editor):
    CachePolicy = apps.get_model("cache_app", "CachePolicy")
    BatchPolicy = apps.get_model("cache_app", "BatchPolicy")
    ModelPricing = apps.get_model("cache_app", "ModelPricing")
    CachePolicy.objects.get_or_create(
        layer="llm", defaults={"ttl_seconds": 86400, "notes": "Default: 24 h, as in the original plan."}
    )
    CachePolicy.objects.get_or_create(
        layer="rag",
        defaults={"ttl_seconds": 3600, "similarity_threshold": 0.95, "notes": "Default: 1 h, cosine >= 0.95."},
    )
    BatchPolicy.objects.get_or_create(pk=1, defaults={"enabled": True, "max_batch_size": 5, "batch_window_ms": 500})
    for model, provider, price_in, price_out, source in PRICES:
        ModelPricing.objects.get_or_create(
            model=model,
            defaults={
                "provider": provider,
                "input_usd_per_mtok": Decimal(price_in),
                "output_usd_per_mtok": Decimal(price_out),
                "source": source,
            },
        )


class Migration(migrations.Migration):
    dependencies = [("cache_app", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
