from rest_framework import serializers

from cache_app.access.limits import BoundedCharField
from cache_app.core import conf


class WaveAtomSerializer(serializers.Serializer):
    atom_id = serializers.UUIDField()
    prompt = BoundedCharField(limit_setting="MAX_PROMPT_CHARS", trim_whitespace=False)


class WaveSerializer(serializers.Serializer):
    masterplan_id = serializers.UUIDField(
        required=False, allow_null=True, default=None, help_text="The wave's masterplan; none: the global scope."
    )
    atoms = WaveAtomSerializer(many=True, allow_empty=False)

    def get_fields(self) -> dict:
        fields = super().get_fields()
        fields["atoms"].max_length = int(conf.get("MAX_WAVE_ATOMS"))  # type: ignore[attr-defined]  # a ListSerializer
        return fields

    def validate_atoms(self, atoms: list[dict]) -> list[dict]:
        ids = [a["atom_id"] for a in atoms]
        if len(set(ids)) != len(ids):
            raise serializers.ValidationError("atom_id values must be unique within a wave.")
        return atoms


class WaveResultsQuerySerializer(serializers.Serializer):
    wave_id = serializers.UUIDField(help_text="The wave_id returned when the wave was sent.")
