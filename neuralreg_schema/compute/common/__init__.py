"""Shared plumbing of every stage: device and threads (runtime), the trainer contract and resumable
state (training), temporary train/eval modes (modes), serialization and format numbers, errors."""
