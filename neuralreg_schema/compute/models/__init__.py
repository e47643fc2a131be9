"""Network definitions used by the compute layer (pure PyTorch, no database)."""
