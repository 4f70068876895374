"""The reference backend: an ML training dashboard migrating through the shim."""
