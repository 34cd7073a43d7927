"""Platform adapters: they translate between a chat platform and the core, nothing more."""
