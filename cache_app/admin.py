from django.contrib import admin

from .models import BatchPolicy, CachePolicy, Masterplan, ModelPricing


@admin.register(Masterplan)
class MasterplanAdmin(admin.ModelAdmin):
    list_display = ("name", "id", "status", "created_at", "updated_at")
    list_filter = ("status",)
    search_fields = ("name", "id")
    readonly_fields = ("created_at", "updated_at")


@admin.register(CachePolicy)
class CachePolicyAdmin(admin.ModelAdmin):
    list_display = (
        "layer",
        "enabled",
        "ttl_seconds",
        "similarity_threshold",
        "cache_nonzero_temperature",
        "cache_truncated",
        "updated_at",
    )
    list_editable = ("enabled", "ttl_seconds", "similarity_threshold")
    readonly_fields = ("updated_at",)
    fieldsets = (
        (None, {"fields": ("layer", "enabled", "ttl_seconds", "notes")}),
        ("RAG", {"fields": ("similarity_threshold",)}),
        ("LLM store rules", {"fields": ("cache_nonzero_temperature", "cache_truncated")}),
        (None, {"fields": ("updated_at",)}),
    )


@admin.register(BatchPolicy)
class BatchPolicyAdmin(admin.ModelAdmin):
    list_display = ("__str__", "enabled", "max_batch_size", "batch_window_ms", "updated_at")
    readonly_fields = ("updated_at",)

    def has_add_permission(self, request) -> bool:
        # A single row, seeded by migration.
        return not BatchPolicy.objects.exists()

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ModelPricing)
class ModelPricingAdmin(admin.ModelAdmin):
    list_display = ("model", "provider", "input_usd_per_mtok", "output_usd_per_mtok", "source", "updated_at")
    list_filter = ("provider",)
    search_fields = ("model",)
    readonly_fields = ("updated_at",)
