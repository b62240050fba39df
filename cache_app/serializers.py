from rest_framework import serializers

from .actions import LAYERS


class InvalidateSerializer(serializers.Serializer):
    layers = serializers.ListField(
        child=serializers.ChoiceField(choices=LAYERS), allow_empty=False, default=list(LAYERS), required=False
    )


class InvalidateLayersSerializer(InvalidateSerializer):
    confirm = serializers.BooleanField(help_text="Must be true: this drops every cached answer of the layers.")

    def validate_confirm(self, value: bool) -> bool:
        if not value:
            raise serializers.ValidationError("Set confirm to true to invalidate whole layers.")
        return value


class InvalidationResultSerializer(serializers.Serializer):
    masterplan_id = serializers.UUIDField(allow_null=True)
    layers = serializers.ListField(child=serializers.CharField())
    deleted_inline = serializers.DictField(child=serializers.IntegerField())


class StatisticsQuerySerializer(serializers.Serializer):
    masterplan_id = serializers.UUIDField(required=False, allow_null=True)
