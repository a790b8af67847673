"""Data: the embedded generator, curation into a manifest, datasets over it, video I/O."""

# Marks the user's real footage (paths.footage) among the real train clips: curation names those
# clips footage-<name>, and the Kubeflow ingest step copies footage into the raw data under that name.
FOOTAGE_PREFIX = "footage-"
