"""Data: content-addressed image storage, validation, manifests, training shards and their loader."""
