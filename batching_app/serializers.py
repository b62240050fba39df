from rest_framework import serializers


class WaveAtomSerializer(serializers.Serializer):
    atom_id = serializers.UUIDField()
    prompt = serializers.CharField(trim_whitespace=False)


class WaveSerializer(serializers.Serializer):
    atoms = WaveAtomSerializer(many=True, allow_empty=False)

    def validate_atoms(self, atoms: list[dict]) -> list[dict]:
        ids = [a["atom_id"] for a in atoms]
        if len(set(ids)) != len(ids):
            raise serializers.ValidationError("atom_id values must be unique within a wave.")
        return atoms


class WaveResultsQuerySerializer(serializers.Serializer):
    atom_ids = serializers.ListField(child=serializers.UUIDField(), allow_empty=False, max_length=1000)
