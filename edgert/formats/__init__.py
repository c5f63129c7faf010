"""Readers for model file formats; format constants live here as tables."""
