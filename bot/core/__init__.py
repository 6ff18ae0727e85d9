"""The pure domain: models, errors, the provider protocol, events and the session service."""
