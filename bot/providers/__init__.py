"""Avatar providers: one adapter per vendor, and the built-in local avatar."""
