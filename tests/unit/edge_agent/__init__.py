"""Unit tests of the edge agent: sources, frames, quality gate."""
