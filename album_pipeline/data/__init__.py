"""Data: content-addressed image storage, validation, manifests and packed training arrays."""
