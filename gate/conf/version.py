"""gate's version, below every layer: reports and the package read it without building the app."""

__version__ = "0.1.0"
