"""Centre-side training: the reference models and their trainer (torch lives here, never on
the vehicle)."""
